// The webcam page: camera (or a picked image/video) -> model.detect -> boxes and FPS drawn live.
// URL options: ?camera=1 starts the camera at once, ?model=<file.tflite> picks a model file of model.json,
// ?flip=1 mirrors, ?track=1 numbers the hands. window.handtrackApp exposes the state for the Chromium tests.
import * as handtrack from './handtrack.js';

const query = new URLSearchParams(location.search);
const $ = (id) => document.getElementById(id);
const view = $('view');
const context = view.getContext('2d');
const video = $('video');
const image = $('image');
const status = $('status');

const app = {
  model: null,
  error: null,
  source: null, // the element being shown: video (camera or file) or image
  frames: [], // the last frames' results: {hands, scores, ms}
  fps: 0,
  detectUrl: null,
};
window.handtrackApp = app;

function params() {
  return {
    flipHorizontal: $('flip').checked,
    track: $('track').checked,
    scoreThreshold: Number($('threshold').value),
    maxNumBoxes: Number($('maxhands').value),
  };
}

let frameTimes = [];
function record(predictions, ms) {
  const now = performance.now();
  frameTimes.push(now);
  frameTimes = frameTimes.filter((t) => now - t < 1000);
  app.fps = frameTimes.length > 1 ? (frameTimes.length - 1) / ((now - frameTimes[0]) / 1000) : 0;
  app.frames.push({hands: predictions.length, scores: predictions.map((p) => p.score), ms});
  if (app.frames.length > 1000) app.frames.shift();
}

function drawFps(ms) {
  const text = `${app.fps.toFixed(1)} FPS  detect ${ms.toFixed(1)} ms`;
  context.font = '16px monospace';
  context.textBaseline = 'top';
  context.fillStyle = 'rgba(0,0,0,0.6)';
  context.fillRect(0, 0, context.measureText(text).width + 12, 24);
  context.fillStyle = '#09ff4d';
  context.fillText(text, 6, 4);
}

async function showFrame(source) {
  const start = performance.now();
  const predictions = await app.model.detect(source);
  const ms = performance.now() - start;
  record(predictions, ms);
  app.model.renderPredictions(predictions, view, context, source);
  drawFps(ms);
  status.textContent = `${app.model.modelFile}: ${predictions.length} hand(s) ` +
    predictions.map((p) => p.score.toFixed(2)).join(' ');
  return predictions;
}

let looping = false;
async function loop() {
  if (looping) return;
  looping = true;
  while (app.source === video && !video.paused && !video.ended) {
    if (video.readyState >= 2) {
      try {
        await showFrame(video);
      } catch (error) {
        status.textContent = `detect failed: ${error.message}`;
      }
    }
    await new Promise((resolve) => requestAnimationFrame(resolve));
  }
  looping = false;
}

async function startCamera() {
  handtrack.stopVideo(video);
  video.removeAttribute('src');
  const result = await handtrack.startVideo(video);
  status.textContent = result.msg;
  if (result.status) {
    app.source = video;
    $('camera').textContent = 'Stop webcam';
    loop();
  }
  return result;
}

function stopCamera() {
  handtrack.stopVideo(video);
  app.source = null;
  $('camera').textContent = 'Start webcam';
}

async function showUrl(url, isVideo) {
  stopCamera();
  if (isVideo) {
    video.src = url;
    video.loop = true;
    await video.play();
    app.source = video;
    loop();
    return null;
  }
  image.src = url;
  await image.decode();
  app.source = image;
  return showFrame(image);
}

// For tests and scripts: the predictions of one image URL (data: URLs too), drawn on the page.
app.detectUrl = (url) => showUrl(url, false);

$('camera').addEventListener('click', () => (app.source === video && video.srcObject ? stopCamera() : startCamera()));
$('file').addEventListener('change', (event) => {
  const file = event.target.files[0];
  if (file) showUrl(URL.createObjectURL(file), file.type.startsWith('video/'));
});
for (const id of ['flip', 'track', 'threshold', 'maxhands']) {
  $(id).addEventListener('change', () => {
    app.model?.setModelParameters(params());
    if (app.source === image) showFrame(image);
  });
}

$('flip').checked = query.get('flip') === '1';
$('track').checked = query.get('track') === '1';
app.ready = handtrack.load({...params(), modelFile: query.get('model') || null}).then(async (model) => {
  app.model = model;
  $('threshold').value = model.params.scoreThreshold;
  $('maxhands').value = model.params.maxNumBoxes;
  status.textContent = `${model.modelFile} loaded (input ${model.inputSize}x${model.inputSize}); ` +
    'start the webcam or pick an image or video';
  if (query.get('camera') === '1') await startCamera();
  return model;
}).catch((error) => {
  app.error = error.message;
  status.textContent = `could not load the model: ${error.message}`;
  throw error;
});
