// The page behind `kpjax serve`: send a photo (picked, dropped or taken with the webcam) to
// POST v1/keypoints and draw what comes back over it: a box per face, a dot per keypoint, the numbers beside.
"use strict";

const $ = (id) => document.getElementById(id);
const SVG = "http://www.w3.org/2000/svg";
let camera = null; // the webcam's MediaStream while it is on
const shown = { url: null, request: 0 }; // the photo on the page, and the request whose answer belongs to it

function setStatus(text, isError = false) {
  $("status").textContent = text;
  $("status").classList.toggle("error", isError);
}

function svgElement(name, attributes, title) {
  const element = document.createElementNS(SVG, name);
  for (const [key, value] of Object.entries(attributes)) element.setAttribute(key, value);
  if (title) {
    const tooltip = document.createElementNS(SVG, "title");
    tooltip.textContent = title;
    element.append(tooltip);
  }
  return element;
}

// Keypoints are pixel indices (pixel centres at integers); in the SVG, pixel i spans [i, i + 1].
function drawFaces(result) {
  const overlay = $("overlay");
  overlay.replaceChildren();
  overlay.setAttribute("viewBox", `0 0 ${result.width} ${result.height}`);
  const radius = Math.max(1.5, Math.max(result.width, result.height) / 150);
  result.faces.forEach((face, index) => {
    const [x, y, w, h] = face.box;
    overlay.append(svgElement("rect", { x, y, width: w, height: h, class: "box" }, `face ${index + 1}`));
    for (const [name, [px, py]] of Object.entries(face.keypoints)) {
      const error = face.errors ? face.errors[name] : null;
      if (error !== null) {  // a ring as wide as the point's expected error: the doubtful points stand out
        overlay.append(svgElement("circle", { cx: px + 0.5, cy: py + 0.5, r: Math.max(error, radius), class: "expected-error" }));
      }
      const dot = svgElement("circle", { cx: px + 0.5, cy: py + 0.5, r: radius, class: "keypoint" },
                             error === null ? `${name} (${px}, ${py})` : `${name} (${px}, ${py}) ± ${error} px`);
      dot.dataset.face = index;
      dot.dataset.name = name;
      overlay.append(dot);
    }
  });
}

function showNumbers(result) {
  const numbers = $("numbers");
  numbers.replaceChildren();
  result.faces.forEach((face, index) => {
    const heading = document.createElement("h2");
    heading.textContent = `Face ${index + 1}`;
    const meta = document.createElement("p");
    meta.className = "face-meta";
    const score = face.score === null ? "taken whole" : `score ${face.score}`;
    const quality = face.expected_nme === null ? "" : ` · expected NME ${(100 * face.expected_nme).toFixed(1)}%`;
    meta.textContent = `box ${face.box.join(", ")} · ${score}${quality}`;
    const table = document.createElement("table");
    const columns = face.errors ? ["keypoint", "x", "y", "± px"] : ["keypoint", "x", "y"];
    table.createTHead().insertRow().append(...columns.map((text) => {
      const cell = document.createElement("th");
      cell.textContent = text;
      return cell;
    }));
    const body = table.createTBody();
    for (const [name, [x, y]] of Object.entries(face.keypoints)) {
      const row = body.insertRow();
      row.dataset.face = index;
      row.dataset.name = name;
      const cells = [name.replaceAll("_", " "), x.toFixed(1), y.toFixed(1)];
      if (face.errors) cells.push(face.errors[name].toFixed(1));
      for (const text of cells) row.insertCell().textContent = text;
    }
    numbers.append(heading, meta, table);
  });
}

// Hovering a dot or a row marks the same keypoint in the other.
function highlight(event) {
  const target = event.target.closest("[data-name]");
  document.querySelectorAll("#numbers tr.highlight").forEach((row) => row.classList.remove("highlight"));
  if (!target) return;
  const { face, name } = target.dataset;
  document.querySelector(`#numbers tr[data-face="${face}"][data-name="${name}"]`)?.classList.add("highlight");
}

async function findKeypoints(blob, name) {
  if (shown.url) URL.revokeObjectURL(shown.url);
  shown.url = URL.createObjectURL(blob);
  const request = ++shown.request; // a photo sent later replaces this one: its answer must not be drawn
  $("photo").src = shown.url;
  $("picture").hidden = false;
  $("stage").classList.remove("empty");
  $("overlay").replaceChildren();
  $("numbers").replaceChildren();
  setStatus(`Finding the keypoints in ${name}…`);
  const form = new FormData();
  form.append("image", blob, name);
  const started = performance.now();
  try {
    const response = await fetch("v1/keypoints", { method: "POST", body: form });
    const result = await response.json();
    if (request !== shown.request) return;
    if (!response.ok) throw new Error(result.error ?? `HTTP ${response.status}`);
    drawFaces(result);
    showNumbers(result);
    const faces = result.faces.length;
    const elapsed = Math.round(performance.now() - started);
    setStatus(faces ? `${faces} face${faces > 1 ? "s" : ""} in ${result.width}×${result.height} px, ${elapsed} ms`
                    : `No face found in ${name} (${elapsed} ms)`);
  } catch (error) {
    if (request === shown.request) setStatus(error.message, true);
  }
}

function pickFile(files) {
  const file = files[0];
  if (file) findKeypoints(file, file.name);
}

async function startCamera() {
  try {
    camera = await navigator.mediaDevices.getUserMedia({ video: true });
  } catch (error) {
    setStatus(`The webcam is not available: ${error.message}`, true);
    return;
  }
  $("camera").srcObject = camera;
  $("camera").hidden = false;
  $("picture").hidden = true;
  $("stage").classList.remove("empty");
  $("camera-start").hidden = true;
  $("camera-shoot").hidden = $("camera-stop").hidden = false;
  setStatus("Look at the camera, then take the photo.");
}

function stopCamera() {
  camera?.getTracks().forEach((track) => track.stop());
  camera = null;
  $("camera").hidden = true;
  $("camera-start").hidden = false;
  $("camera-shoot").hidden = $("camera-stop").hidden = true;
}

function shoot() {
  const video = $("camera");
  const canvas = document.createElement("canvas");
  canvas.width = video.videoWidth;
  canvas.height = video.videoHeight;
  canvas.getContext("2d").drawImage(video, 0, 0);
  stopCamera();
  canvas.toBlob((blob) => findKeypoints(blob, "webcam.jpg"), "image/jpeg", 0.92);
}

function setUp() {
  $("file").addEventListener("change", (event) => pickFile(event.target.files));
  const stage = $("stage");
  stage.addEventListener("dragover", (event) => {
    event.preventDefault();
    stage.classList.add("dragging");
  });
  stage.addEventListener("dragleave", () => stage.classList.remove("dragging"));
  stage.addEventListener("drop", (event) => {
    event.preventDefault();
    stage.classList.remove("dragging");
    stopCamera();
    pickFile(event.dataTransfer.files);
  });
  $("overlay").addEventListener("mouseover", highlight);
  $("numbers").addEventListener("mouseover", highlight);
  if (navigator.mediaDevices?.getUserMedia) {
    $("camera-start").addEventListener("click", startCamera);
    $("camera-shoot").addEventListener("click", shoot);
    $("camera-stop").addEventListener("click", stopCamera);
  } else {
    $("camera-start").disabled = true;
    $("camera-start").title = "This browser allows the webcam only on https or localhost pages.";
  }
  fetch("healthz").then((response) => response.json()).then((health) => {
    $("model").textContent = `model ${health.model}, ${health.keypoints} keypoints`;
  }).catch(() => setStatus("The server does not answer.", true));
}

setUp();
