// handtrack.js-style hand detection in the browser, on the project's own exported model.
//
//   const model = await handtrack.load({scoreThreshold: 0.2, maxNumBoxes: 2, flipHorizontal: true});
//   const predictions = await model.detect(videoOrImageOrCanvas);  // [{bbox: [x, y, w, h], class, score}]
//   model.renderPredictions(predictions, canvas, canvas.getContext('2d'), video);
//
// The model is the same hand_detector(_int8).tflite the Python detector runs (written under web/model/ by
// `make web`), executed by LiteRT.js (XNNPack in WebAssembly). The .tflite takes the resized, normalized
// frame, so this module does what utils/runtime/contract.py does: TF1 legacy bilinear resize (no half-pixel
// centres, edge pixels repeated) then x*2/255-1. LiteRT.js cannot run the model's last op,
// TFLite_Detection_PostProcess (its outputs have no static shape), so `make web` cuts it off and this module
// does its work: box decoding against the anchors and non-max suppression, with the op's settings.
import {loadAndCompile, loadLiteRt, Tensor} from '@litertjs/core';

const HERE = new URL('.', import.meta.url);

export const DEFAULT_PARAMS = Object.freeze({
  modelUrl: new URL('model/', HERE).href, // folder holding model.json (written by `make web`)
  modelFile: null, // a .tflite file name in that folder; null: model.json's default (int8)
  wasmUrl: new URL('node_modules/@litertjs/core/wasm/', HERE).href,
  scoreThreshold: null, // null: model.json's (the Python detector's default, 0.2)
  maxNumBoxes: null, // null: model.json's (2 hands)
  flipHorizontal: false, // mirror the input first (a selfie view); boxes are then in mirrored pixels
  track: false, // give each box a stable `id` across calls (greedy IoU matching)
  trackIou: 0.3,
  threads: false, // the threaded Wasm build; needs a cross-origin-isolated page (COOP/COEP headers)
  bboxLineWidth: 2,
  boxColor: '#09ff4d', // the original project's green
  fontSize: 14,
});

let runtime = null; // one LiteRT.js Wasm runtime per page

async function fetchJson(url) {
  const response = await fetch(url);
  if (!response.ok) {
    throw new Error(`${url}: HTTP ${response.status}; run \`make web\` to export the model`);
  }
  return response.json();
}

function sourceSize(input) {
  if (typeof HTMLVideoElement !== 'undefined' && input instanceof HTMLVideoElement) {
    return [input.videoWidth, input.videoHeight];
  }
  if (typeof HTMLImageElement !== 'undefined' && input instanceof HTMLImageElement) {
    return [input.naturalWidth, input.naturalHeight];
  }
  if (typeof ImageData !== 'undefined' && input instanceof ImageData) return [input.width, input.height];
  if (input && typeof input.width === 'number') return [input.width, input.height]; // canvas, ImageBitmap
  throw new Error('detect(): pass a <video>, <img>, <canvas>, ImageBitmap or ImageData');
}

// RGBA pixels -> float32 [S*S*3] in [-1, 1], TF1 legacy bilinear: output pixel i samples input i*in/S,
// neighbours clamped at the edge (as cv2.warpAffine with BORDER_REPLICATE in the Python runtime).
export function legacyResizeNormalize(rgba, width, height, size, out = new Float32Array(size * size * 3)) {
  const sy = height / size;
  const sx = width / size;
  const x0s = new Int32Array(size);
  const x1s = new Int32Array(size);
  const dxs = new Float32Array(size);
  for (let j = 0; j < size; j++) {
    const x = j * sx;
    const x0 = Math.min(Math.floor(x), width - 1);
    x0s[j] = x0 * 4;
    x1s[j] = Math.min(x0 + 1, width - 1) * 4;
    dxs[j] = x - x0;
  }
  let o = 0;
  for (let i = 0; i < size; i++) {
    const y = i * sy;
    const y0 = Math.min(Math.floor(y), height - 1);
    const r0 = y0 * width * 4;
    const r1 = Math.min(y0 + 1, height - 1) * width * 4;
    const dy = y - y0;
    for (let j = 0; j < size; j++) {
      const a = r0 + x0s[j];
      const b = r0 + x1s[j];
      const c = r1 + x0s[j];
      const d = r1 + x1s[j];
      const dx = dxs[j];
      for (let k = 0; k < 3; k++) {
        const top = rgba[a + k] + (rgba[b + k] - rgba[a + k]) * dx;
        const bottom = rgba[c + k] + (rgba[d + k] - rgba[c + k]) * dx;
        out[o++] = (top + (bottom - top) * dy) * (2 / 255) - 1;
      }
    }
  }
  return out;
}

function iou(a, b) {
  const x0 = Math.max(a[0], b[0]);
  const y0 = Math.max(a[1], b[1]);
  const x1 = Math.min(a[0] + a[2], b[0] + b[2]);
  const y1 = Math.min(a[1] + a[3], b[1] + b[3]);
  const inter = Math.max(0, x1 - x0) * Math.max(0, y1 - y0);
  const union = a[2] * a[3] + b[2] * b[3] - inter;
  return union > 0 ? inter / union : 0;
}

// TFLite_Detection_PostProcess's box decoding: Faster R-CNN encodings against centre-size anchors,
// to corner boxes (ymin, xmin, ymax, xmax) normalized, float32 as the op computes them.
export function decodeBoxes(encodings, anchors, options) {
  const count = anchors.length;
  const boxes = new Float32Array(count * 4);
  for (let i = 0; i < count; i++) {
    const [ya, xa, ha, wa] = anchors[i];
    const e = 4 * i;
    const yc = Math.fround(Math.fround(encodings[e] / options.y_scale) * ha + ya);
    const xc = Math.fround(Math.fround(encodings[e + 1] / options.x_scale) * wa + xa);
    const halfH = Math.fround(0.5 * Math.fround(Math.exp(Math.fround(encodings[e + 2] / options.h_scale))) * ha);
    const halfW = Math.fround(0.5 * Math.fround(Math.exp(Math.fround(encodings[e + 3] / options.w_scale))) * wa);
    boxes[e] = yc - halfH;
    boxes[e + 1] = xc - halfW;
    boxes[e + 2] = yc + halfH;
    boxes[e + 3] = xc + halfW;
  }
  return boxes;
}

function cornerIou(boxes, i, j) {
  const a = 4 * i;
  const b = 4 * j;
  const yminI = Math.min(boxes[a], boxes[a + 2]);
  const xminI = Math.min(boxes[a + 1], boxes[a + 3]);
  const ymaxI = Math.max(boxes[a], boxes[a + 2]);
  const xmaxI = Math.max(boxes[a + 1], boxes[a + 3]);
  const yminJ = Math.min(boxes[b], boxes[b + 2]);
  const xminJ = Math.min(boxes[b + 1], boxes[b + 3]);
  const ymaxJ = Math.max(boxes[b], boxes[b + 2]);
  const xmaxJ = Math.max(boxes[b + 1], boxes[b + 3]);
  const areaI = (ymaxI - yminI) * (xmaxI - xminI);
  const areaJ = (ymaxJ - yminJ) * (xmaxJ - xminJ);
  if (areaI <= 0 || areaJ <= 0) return 0;
  const inter = Math.max(Math.min(ymaxI, ymaxJ) - Math.max(yminI, yminJ), 0) *
    Math.max(Math.min(xmaxI, xmaxJ) - Math.max(xminI, xminJ), 0);
  return inter / (areaI + areaJ - inter);
}

// The op's single-class NMS: scores >= the score threshold, best first (stable), greedy suppression of
// IoU > the IoU threshold, at most maxDetections indices.
function nmsSingleClass(boxes, score, count, options, maxDetections) {
  const keep = [];
  for (let i = 0; i < count; i++) if (score(i) >= options.nms_score_threshold) keep.push(i);
  keep.sort((a, b) => score(b) - score(a)); // Array.prototype.sort is stable
  const selected = [];
  const active = new Uint8Array(keep.length).fill(1);
  for (let i = 0; i < keep.length && selected.length < maxDetections; i++) {
    if (!active[i]) continue;
    selected.push(keep[i]);
    for (let j = i + 1; j < keep.length; j++) {
      if (active[j] && cornerIou(boxes, keep[i], keep[j]) > options.nms_iou_threshold) active[j] = 0;
    }
  }
  return selected;
}

// Raw outputs -> [{box: [ymin, xmin, ymax, xmax], classIndex (0-based), score}], best first, as the op
// gives them: one class per box (its best) unless use_regular_nms (per-class NMS, then the best overall).
export function postprocess(encodings, classScores, anchors, options) {
  const count = anchors.length;
  const numClasses = options.num_classes;
  const stride = classScores.length / count; // num_classes + 1: column 0 is the background
  const boxes = decodeBoxes(encodings, anchors, options);
  const found = [];
  if (options.use_regular_nms) {
    for (let c = 0; c < numClasses; c++) {
      const score = (i) => classScores[i * stride + 1 + c];
      const perClass = options.detections_per_class ?? options.max_detections;
      for (const i of nmsSingleClass(boxes, score, count, options, perClass)) found.push([i, c, score(i)]);
    }
    found.sort((a, b) => b[2] - a[2]);
  } else {
    const best = new Int32Array(count);
    const bestScore = new Float32Array(count);
    for (let i = 0; i < count; i++) {
      let c0 = 0;
      for (let c = 1; c < numClasses; c++) if (classScores[i * stride + 1 + c] > classScores[i * stride + 1 + c0]) c0 = c;
      best[i] = c0;
      bestScore[i] = classScores[i * stride + 1 + c0];
    }
    for (const i of nmsSingleClass(boxes, (i) => bestScore[i], count, options, options.max_detections)) {
      found.push([i, best[i], bestScore[i]]);
    }
  }
  return found.slice(0, options.max_detections).map(([i, classIndex, score]) => ({
    box: Array.from(boxes.subarray(4 * i, 4 * i + 4)), classIndex, score,
  }));
}

export class HandModel {
  constructor(compiled, meta, params, file) {
    this.compiled = compiled;
    this.meta = meta;
    this.params = params;
    this.modelFile = file;
    const shape = compiled.getInputDetails()[0].shape;
    this.inputSize = Number(shape[1]);
    this.labels = meta.labels;
    this.postprocessOptions = meta.files[file].postprocess;
    this.canvas = null;
    this.input = new Float32Array(this.inputSize * this.inputSize * 3);
    this.tracks = [];
    this.nextId = 1;
  }

  getModelParameters() {
    return {...this.params};
  }

  setModelParameters(params) {
    Object.assign(this.params, params);
  }

  // The input's pixels as RGBA at its own size (mirrored when flipHorizontal).
  pixels(input) {
    const [width, height] = sourceSize(input);
    if (!width || !height) throw new Error('detect(): the input has no pixels yet (video not playing?)');
    if (input instanceof ImageData && !this.params.flipHorizontal) return {data: input.data, width, height};
    if (!this.canvas) this.canvas = document.createElement('canvas');
    if (this.canvas.width !== width || this.canvas.height !== height) {
      this.canvas.width = width;
      this.canvas.height = height;
    }
    const context = this.canvas.getContext('2d', {willReadFrequently: true});
    context.save();
    if (this.params.flipHorizontal) {
      context.translate(width, 0);
      context.scale(-1, 1);
    }
    if (input instanceof ImageData) {
      context.putImageData(input, 0, 0);
      if (this.params.flipHorizontal) context.drawImage(this.canvas, 0, 0);
    } else {
      context.drawImage(input, 0, 0, width, height);
    }
    context.restore();
    return {data: context.getImageData(0, 0, width, height).data, width, height};
  }

  async detect(input) {
    const {data, width, height} = this.pixels(input);
    legacyResizeNormalize(data, width, height, this.inputSize, this.input);
    const tensor = new Tensor(this.input, [1, this.inputSize, this.inputSize, 3]);
    let outputs;
    try {
      outputs = await this.compiled.run({[this.meta.input]: tensor});
    } finally {
      tensor.delete();
    }
    let encodings;
    let classScores;
    try {
      encodings = outputs.box_encodings.toTypedArray().slice();
      classScores = outputs.class_scores.toTypedArray().slice();
    } finally {
      for (const t of Object.values(outputs)) t.delete();
    }
    const detections = postprocess(encodings, classScores, this.meta.anchors, this.postprocessOptions);
    const predictions = [];
    const maxBoxes = this.params.maxNumBoxes;
    for (const {box, classIndex, score} of detections) {
      if (maxBoxes != null && predictions.length >= maxBoxes) break;
      if (score <= this.params.scoreThreshold) continue; // the Python detector's rule (score > min)
      // Clipped to the image, as the Python TFLite detector does (the op does not clip).
      const [ymin, xmin, ymax, xmax] = box.map((v) => Math.min(1, Math.max(0, v)));
      const classId = classIndex + 1; // the op numbers classes from 0; label map ids start at 1
      predictions.push({
        bbox: [xmin * width, ymin * height, (xmax - xmin) * width, (ymax - ymin) * height],
        class: this.labels[String(classId)] ?? String(classId),
        classId,
        score,
      });
    }
    if (this.params.track) this.assignIds(predictions);
    return predictions;
  }

  // Greedy IoU matching with the previous call's boxes: best overlaps first, new ids for the rest.
  assignIds(predictions) {
    const pairs = [];
    predictions.forEach((p, i) => this.tracks.forEach((t, j) => {
      const overlap = iou(p.bbox, t.bbox);
      if (overlap >= this.params.trackIou) pairs.push([overlap, i, j]);
    }));
    pairs.sort((a, b) => b[0] - a[0]);
    const usedTracks = new Set();
    for (const [, i, j] of pairs) {
      if (predictions[i].id !== undefined || usedTracks.has(j)) continue;
      predictions[i].id = this.tracks[j].id;
      usedTracks.add(j);
    }
    for (const p of predictions) if (p.id === undefined) p.id = this.nextId++;
    this.tracks = predictions.map((p) => ({id: p.id, bbox: p.bbox}));
  }

  // Draw the media (mirrored when flipHorizontal, as detect saw it) and the boxes onto canvas.
  renderPredictions(predictions, canvas, context, mediaSource) {
    context = context || canvas.getContext('2d');
    if (mediaSource) {
      const [width, height] = sourceSize(mediaSource);
      if (canvas.width !== width || canvas.height !== height) {
        canvas.width = width;
        canvas.height = height;
      }
      context.save();
      if (this.params.flipHorizontal) {
        context.translate(width, 0);
        context.scale(-1, 1);
      }
      if (mediaSource instanceof ImageData) context.putImageData(mediaSource, 0, 0);
      else context.drawImage(mediaSource, 0, 0, width, height);
      context.restore();
    }
    context.lineWidth = this.params.bboxLineWidth;
    context.font = `${this.params.fontSize}px sans-serif`;
    context.textBaseline = 'top';
    for (const p of predictions) {
      const [x, y, w, h] = p.bbox;
      context.strokeStyle = this.params.boxColor;
      context.strokeRect(x, y, w, h);
      const label = `${p.id !== undefined ? `#${p.id} ` : ''}${p.class} ${p.score.toFixed(2)}`;
      const textWidth = context.measureText(label).width + 6;
      context.fillStyle = this.params.boxColor;
      context.fillRect(x, Math.max(0, y - this.params.fontSize - 4), textWidth, this.params.fontSize + 4);
      context.fillStyle = '#000';
      context.fillText(label, x + 3, Math.max(0, y - this.params.fontSize - 4) + 2);
    }
  }

  dispose() {
    this.compiled.delete?.();
  }
}

// Load the exported model: model.json (written by `make web`) names the files, labels and defaults.
export async function load(options = {}) {
  const params = {...DEFAULT_PARAMS, ...options};
  const base = new URL(params.modelUrl.endsWith('/') ? params.modelUrl : `${params.modelUrl}/`, location.href);
  const meta = await fetchJson(new URL('model.json', base));
  params.scoreThreshold ??= meta.scoreThreshold;
  params.maxNumBoxes ??= meta.maxNumBoxes;
  const file = params.modelFile || meta.default;
  if (!meta.files[file]) throw new Error(`${file}: not in ${base}model.json (has ${Object.keys(meta.files)})`);
  if (!runtime) runtime = loadLiteRt(params.wasmUrl, {threads: params.threads});
  await runtime;
  const compiled = await loadAndCompile(new URL(file, base).href, {accelerator: 'wasm'});
  return new HandModel(compiled, meta, params, file);
}

// handtrack.js's camera helpers: start the user's camera in a <video> (resolves {status, msg}).
export async function startVideo(video, constraints = {video: {facingMode: 'user'}, audio: false}) {
  if (!navigator.mediaDevices?.getUserMedia) return {status: false, msg: 'no camera API in this browser'};
  try {
    video.srcObject = await navigator.mediaDevices.getUserMedia(constraints);
    await new Promise((resolve) => {
      video.onloadedmetadata = resolve;
    });
    await video.play();
    return {status: true, msg: 'camera started'};
  } catch (error) {
    return {status: false, msg: `camera not available: ${error.message}`};
  }
}

export function stopVideo(video) {
  if (video.srcObject) for (const track of video.srcObject.getTracks()) track.stop();
  video.srcObject = null;
  return {status: true, msg: 'camera stopped'};
}

export const version = '0.1.0';
