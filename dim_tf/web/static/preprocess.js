// A drawing -> the 28x28 uint8 image the model reads: MNIST's recipe, the same computation as
// dim_tf/web/preprocess.py (the tests compare the two): the ink's bounding box scaled (aspect kept, area averaging)
// so its longer side is 20 pixels, placed in a black 28x28 field with its centre of mass at (13.5, 13.5).
// No ink gives a black image. Rounding is Math.round (floor(x + 0.5)) as in the Python version.

export const FIELD = 28;
const BOX = 20;
const CENTRE = (FIELD - 1) / 2;

function areaWeights(nIn, nOut) {
  const w = [];
  const step = nIn / nOut;
  for (let i = 0; i < nOut; i++) {
    const row = new Float64Array(nIn);
    const lo = i * step, hi = (i + 1) * step;
    for (let k = Math.floor(lo); k < Math.min(nIn, Math.ceil(hi)); k++) {
      row[k] = (Math.min(hi, k + 1) - Math.max(lo, k)) / step;
    }
    w.push(row);
  }
  return w;
}

// gray: Float64Array of height*width values in [0, 1] (light ink on black). Returns Uint8Array(784).
export function centerDigit(gray, width, height) {
  const out = new Uint8Array(FIELD * FIELD);
  let top = -1, bottom = -1, left = width, right = -1;
  for (let y = 0; y < height; y++) {
    for (let x = 0; x < width; x++) {
      if (gray[y * width + x] > 0) {
        if (top < 0) top = y;
        bottom = y;
        if (x < left) left = x;
        if (x > right) right = x;
      }
    }
  }
  if (top < 0) return out;
  const h = bottom - top + 1, w = right - left + 1;
  const scale = BOX / Math.max(h, w);
  const oh = Math.max(1, Math.round(h * scale)), ow = Math.max(1, Math.round(w * scale));
  const wy = areaWeights(h, oh), wx = areaWeights(w, ow);
  // patch = wy @ crop @ wx^T, as NumPy computes it: first crop @ wx^T ([h, ow]), then wy @ that.
  const tmp = new Float64Array(h * ow);
  for (let r = 0; r < h; r++) {
    for (let j = 0; j < ow; j++) {
      let s = 0;
      const wj = wx[j];
      for (let c = 0; c < w; c++) s += gray[(top + r) * width + left + c] * wj[c];
      tmp[r * ow + j] = s;
    }
  }
  const patch = new Float64Array(oh * ow);
  let total = 0, sy = 0, sx = 0;
  for (let i = 0; i < oh; i++) {
    const wi = wy[i];
    for (let j = 0; j < ow; j++) {
      let s = 0;
      for (let r = 0; r < h; r++) s += wi[r] * tmp[r * ow + j];
      patch[i * ow + j] = s;
      total += s;
      sy += i * s;
      sx += j * s;
    }
  }
  const cy = sy / total, cx = sx / total;
  const oy = Math.min(Math.max(Math.round(CENTRE - cy), 0), FIELD - oh);
  const ox = Math.min(Math.max(Math.round(CENTRE - cx), 0), FIELD - ow);
  for (let i = 0; i < oh; i++) {
    for (let j = 0; j < ow; j++) {
      out[(oy + i) * FIELD + ox + j] = Math.min(255, Math.max(0, Math.round(patch[i * ow + j] * 255)));
    }
  }
  return out;
}
