// voxssl explore: NiiVue viewers + cosine-similarity overlays served by `voxssl explore`.
"use strict";

const state = {
  ready: false,      // every viewer has its scan and overlay loaded
  clicks: 0,         // answered clicks
  outside: 0,        // clicks outside the embedded region (no map)
  last: null,        // JSON header of the last answer
  timings: [],       // {server_ms, fetch_ms, total_ms} per answered click
  error: null,
};
window.voxsslExplore = state;

const viewers = [];         // Niivue instance per scan
state.viewers = viewers;    // for scripts and tests
const lastInput = [];       // time of the last pointer/key input on each viewer's canvas
let info = null;
let inFlight = false;
let pending = null;

function setStatus(text) {
  document.getElementById("status").textContent = text;
}

function fmt(v) {
  return v.map((x) => x.toFixed(1)).join(", ");
}

async function main() {
  info = await (await fetch("/api/info")).json();
  const panels = document.getElementById("panels");
  for (const scan of info.scans) {
    const panel = document.createElement("div");
    panel.className = "panel";
    panel.innerHTML = `<h2>${scan.index + 1}. ${scan.name} <small>(embedding ${scan.embedding_shape.join("x")}, stride ${scan.stride}, ${scan.dim}-d)</small></h2>` +
      `<div class="view"><canvas id="gl${scan.index}"></canvas></div><div class="match" id="match${scan.index}"></div>`;
    panels.appendChild(panel);
  }
  for (const scan of info.scans) {
    const nv = new niivue.Niivue({
      backColor: [0, 0, 0, 1],
      crosshairColor: [0.1, 1.0, 0.1, 0.9],
      crosshairWidth: 1,
      crosshairWidthUnit: "mm",
      show3Dcrosshair: false,
      isColorbar: true,
      multiplanarShowRender: niivue.SHOW_RENDER.NEVER,
      loadingText: "loading...",
    });
    await nv.attachToCanvas(document.getElementById(`gl${scan.index}`));
    await nv.loadVolumes([
      { url: `/api/scan/${scan.index}.nii`, name: `scan${scan.index}.nii` },
      { url: `/api/overlay/${scan.index}.nii`, name: `similarity${scan.index}.nii`, colormap: "warm", opacity: 0.75, cal_min: 0.5, cal_max: 1.0 },
    ]);
    nv.setSliceType(nv.sliceTypeMultiplanar);
    nv.onLocationChange = (location) => onLocation(scan.index, location);
    viewers.push(nv);
    lastInput.push(-Infinity);
    const canvas = document.getElementById(`gl${scan.index}`);
    for (const type of ["pointerdown", "pointermove", "keydown", "wheel"]) {
      canvas.addEventListener(type, (event) => {
        if (type !== "pointermove" || event.buttons) lastInput[scan.index] = performance.now();
      });
    }
  }
  document.getElementById("top").addEventListener("change", () => state.last && applyDisplayRange(state.last));
  state.ready = true;
  setStatus(`ready: ${info.scans.length} scan(s), similarity in ${info.similarity_dim} dimensions` +
    (info.pca_energy < 1 ? ` (PCA keeps ${(100 * info.pca_energy).toFixed(1)} %)` : ""));
}

function onLocation(index, location) {
  // only the user's clicks, drags and keys ask for a map; our own crosshair moves do not
  if (performance.now() - lastInput[index] > 1000) return;
  const request = { index, mm: Array.from(location.mm).slice(0, 3), started: performance.now() };
  if (inFlight) { pending = request; return; }        // keep only the latest click
  query(request);
}

async function query(request) {
  inFlight = true;
  try {
    const { index, mm, started } = request;
    const url = `/api/click?scan=${index}&x=${mm[0]}&y=${mm[1]}&z=${mm[2]}`;
    const buffer = await (await fetch(url)).arrayBuffer();
    const fetched = performance.now();
    const headerLength = new DataView(buffer).getUint32(0, true);
    const header = JSON.parse(new TextDecoder().decode(new Uint8Array(buffer, 4, headerLength)));
    if (!header.inside) {
      state.outside += 1;
      setStatus(`(${fmt(mm)}) mm is outside the embedded region of scan ${index + 1}`);
      return;
    }
    let offset = 4 + headerLength;
    info.scans.forEach((scan, j) => {
      const count = scan.embedding_shape.reduce((a, b) => a * b, 1);
      viewers[j].volumes[1].img.set(new Float32Array(buffer, offset, count));
      offset += 4 * count;
    });
    applyDisplayRange(header);
    header.matches.forEach((match, j) => {
      const line = document.getElementById(`match${j}`);
      if (j === index) {
        line.textContent = `query (${fmt(header.voxel_world_mm)}) mm, embedding voxel ${header.voxel.join(",")}`;
      } else {
        line.textContent = `best match (${fmt(match.world_mm)}) mm, cosine ${match.score.toFixed(3)}`;
        const nv = viewers[j];
        nv.scene.crosshairPos = nv.mm2frac(match.world_mm);
        nv.drawScene();
      }
    });
    await new Promise((resolve) => requestAnimationFrame(() => requestAnimationFrame(resolve)));
    const drawn = performance.now();
    state.timings.push({ server_ms: header.server_ms, fetch_ms: fetched - started, total_ms: drawn - started });
    state.last = header;
    state.clicks += 1;
    setStatus(`click -> overlay ${(drawn - started).toFixed(0)} ms (server ${header.server_ms.toFixed(0)} ms)`);
  } catch (err) {
    state.error = String(err);
    setStatus(`error: ${err}`);
  } finally {
    inFlight = false;
    if (pending) { const next = pending; pending = null; query(next); }
  }
}

function applyDisplayRange(header) {
  const choice = document.getElementById("top").value;
  header.display.forEach((range, j) => {
    const overlay = viewers[j].volumes[1];
    overlay.cal_min = choice === "all" ? 0.0 : range[choice];
    overlay.cal_max = Math.max(range.max, overlay.cal_min + 1e-3);
    // re-upload only the overlay layer (updateGLVolume() would also re-upload the scan itself)
    viewers[j].refreshLayers(overlay, 1);
    viewers[j].drawScene();
  });
}

// For tests and benchmarks: the CSS-pixel position (page coordinates) of a world point in the
// axial view of scan `index`, after moving that viewer's crosshair (and so its slices) onto it.
state.pagePointOf = (index, mm) => {
  const nv = viewers[index];
  nv.scene.crosshairPos = nv.mm2frac(mm);
  nv.drawScene();
  const found = nv.frac2canvasPosWithTile(nv.mm2frac(mm), niivue.SLICE_TYPE.AXIAL);
  if (!found) return null;
  const rect = nv.canvas.getBoundingClientRect();
  const scale = rect.width / nv.canvas.width;
  return { x: rect.left + found.pos[0] * scale, y: rect.top + found.pos[1] * scale, tile: found.tileIndex };
};
state.overlayStats = (index) => {
  const img = viewers[index].volumes[1].img;
  let nonzero = 0, max = -Infinity;
  for (const v of img) { if (v !== 0) nonzero += 1; if (v > max) max = v; }
  return { voxels: img.length, nonzero, max, cal_min: viewers[index].volumes[1].cal_min };
};
state.crosshairMM = (index) => Array.from(viewers[index].frac2mm(viewers[index].scene.crosshairPos)).slice(0, 3);

main().catch((err) => { state.error = String(err); setStatus(`error: ${err}`); });
