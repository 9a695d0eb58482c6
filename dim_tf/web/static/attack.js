// Square attack (Andriushchenko et al., ECCV 2020), L-inf, score-based black box: it sees only the model's ten
// scores, one query per candidate. Works in uint8 pixels, the model's own input: every candidate is
// clip(x0 + s * epsPx) with s = +-1 per pixel, so ||x - x0||_inf <= epsPx / 255 always holds.
//
//   loss     margin = score[y] - max_{j != y} score[j] (y: the model's label of x0); a candidate is kept when it
//            lowers the margin; success when the model's label is no longer y.
//   start    vertical stripes: one random sign per column (one query).
//   step     one random square window of side round(sqrt(p * 784)) gets a fresh random sign; p starts at pInit
//            and halves on the paper's schedule (iterations 10, 50, 200, 500, 1k, 2k, 4k, 6k, 8k of 10k),
//            rescaled to the query budget.

const N = 28;

// mulberry32: a small seeded generator, so an attack is repeatable from its seed.
export function rng(seed) {
  let a = seed >>> 0;
  return () => {
    a = (a + 0x6D2B79F5) >>> 0;
    let t = a;
    t = Math.imul(t ^ (t >>> 15), t | 1);
    t ^= t + Math.imul(t ^ (t >>> 7), t | 61);
    return ((t ^ (t >>> 14)) >>> 0) / 4294967296;
  };
}

function pSelection(pInit, it, budget) {
  const i = Math.floor((it / budget) * 10000);
  const cuts = [10, 50, 200, 500, 1000, 2000, 4000, 6000, 8000];
  let p = pInit;
  for (const c of cuts) if (i > c) p /= 2;
  return p;
}

export function margin(scores, y) {
  let other = -Infinity;
  for (let j = 0; j < scores.length; j++) if (j !== y && scores[j] > other) other = scores[j];
  return scores[y] - other;
}

// query(u8) -> Promise<{label, scores}>. Returns {success, x, label, scores, queries, margin, seconds}.
export async function squareAttack({x0, label, query, epsPx, maxQueries = 1000, pInit = 0.3, seed = 0,
                                    onProgress = null, shouldStop = null}) {
  const rand = rng(seed);
  const sign = () => (rand() < 0.5 ? -1 : 1);
  const clip = (v) => (v < 0 ? 0 : v > 255 ? 255 : v);
  const start = performance.now();
  let best = new Uint8Array(x0.length);
  for (let c = 0; c < N; c++) {
    const s = sign();
    for (let r = 0; r < N; r++) best[r * N + c] = clip(x0[r * N + c] + s * epsPx);
  }
  let out = await query(best);
  let queries = 1;
  let bestMargin = margin(out.scores, label);
  let bestOut = out;
  const done = () => bestOut.label !== label;
  for (let it = 1; !done() && queries < maxQueries; it++) {
    if (shouldStop && shouldStop()) break;
    const p = pSelection(pInit, it, maxQueries);
    const side = Math.min(N - 1, Math.max(1, Math.round(Math.sqrt(p * N * N))));
    const r0 = Math.floor(rand() * (N - side + 1)), c0 = Math.floor(rand() * (N - side + 1));
    const cand = best.slice();
    // a fresh sign for the window; if it would leave the window as it is, take the other one
    let s = sign();
    for (let tries = 0; tries < 2; tries++) {
      let same = true;
      for (let r = r0; r < r0 + side && same; r++) {
        for (let c = c0; c < c0 + side; c++) {
          if (clip(x0[r * N + c] + s * epsPx) !== best[r * N + c]) { same = false; break; }
        }
      }
      if (!same) break;
      s = -s;
    }
    for (let r = r0; r < r0 + side; r++) {
      for (let c = c0; c < c0 + side; c++) cand[r * N + c] = clip(x0[r * N + c] + s * epsPx);
    }
    out = await query(cand);
    queries++;
    const m = margin(out.scores, label);
    if (m < bestMargin || out.label !== label) {
      best = cand;
      bestMargin = m;
      bestOut = out;
    }
    if (onProgress && queries % 25 === 0) await onProgress({queries, margin: bestMargin, label: bestOut.label});
  }
  return {success: bestOut.label !== label, x: best, label: bestOut.label, scores: bestOut.scores, queries,
          margin: bestMargin, seconds: (performance.now() - start) / 1000};
}
