// pointseg's HTML viewer (viewer/html.py inlines this into every page it writes).
// Data: one JSON block (class table, counts, metrics, strings from user files; only ever put into
// the page with textContent) and gzip + base64 arrays decoded with the browser's DecompressionStream.
(function () {
  'use strict';
  const $ = (id) => document.getElementById(id);
  const statusEl = $('status');
  const t0 = performance.now();

  function fail(msg) {
    statusEl.dataset.state = 'error';
    statusEl.textContent = 'error: ' + msg;
    console.error('pointseg: ' + msg);
  }
  window.addEventListener('error', (e) => fail(e.message || String(e)));
  window.addEventListener('unhandledrejection', (e) => fail(String((e.reason && e.reason.message) || e.reason)));

  const meta = JSON.parse($('pointseg-meta').textContent);
  const MODES = ['rgb', 'pred', 'gt', 'error'];
  const TITLES = { rgb: meta.has.rgb ? 'RGB' : 'Height', pred: 'Prediction', gt: 'Ground truth', error: 'Error' };
  const TYPES = { uint8: Uint8Array, uint16: Uint16Array };
  const fmt = (n) => Number(n).toLocaleString('en-US');
  const pct = (v) => (100 * v).toFixed(1) + ' %';

  async function array(spec) {
    const b64 = $(spec.id).textContent.trim();
    let bytes;
    if (Uint8Array.fromBase64) {
      bytes = Uint8Array.fromBase64(b64);
    } else {
      const bin = atob(b64);
      bytes = new Uint8Array(bin.length);
      for (let i = 0; i < bin.length; i++) bytes[i] = bin.charCodeAt(i);
    }
    const stream = new Blob([bytes]).stream().pipeThrough(new DecompressionStream('gzip'));
    const buf = await new Response(stream).arrayBuffer();
    const out = new TYPES[spec.dtype](buf);
    if (out.length !== spec.length) throw new Error('array ' + spec.id + ' has ' + out.length + ' values, expected ' + spec.length);
    return out;
  }

  // ------------------------------------------------------------------ state
  const k = meta.classes.length;
  const hidden = new Uint8Array(Math.max(k, 1));
  for (const i of meta.hidden) hidden[i] = 1;
  const state = { mode: meta.mode, size: meta.point_size };
  let renderer, scene, camera, controls, material, paletteTex, P, keyArrays = {}, conf = null, n = 0;

  // The label whose class the legend lists and hiding applies to: what the colouring shows.
  function keyName(mode) {
    if (mode === 'pred') return 'pred';
    if (mode === 'gt' || mode === 'error') return 'gt';
    return meta.has.pred ? 'pred' : (meta.has.gt ? 'gt' : null);
  }

  // ------------------------------------------------------------------ page text
  function facts() {
    $('title').textContent = meta.title;
    document.title = meta.title;
    const rows = [];
    if (meta.scan) rows.push(['scan', meta.scan]);
    if (meta.model) rows.push(['model', meta.model]);
    let pts = fmt(meta.points) + ' points';
    if (meta.voxel !== null) {
      pts += ' (' + fmt(meta.shown) + ' shown: voxel-downsampled with ' + (100 * meta.voxel).toFixed(1) +
        ' cm voxels, every class kept; shares and IoU use every point)';
    }
    rows.push(['points', pts]);
    if (meta.oa !== null) rows.push(['accuracy', 'OA ' + pct(meta.oa) + ' · mIoU ' + (meta.miou === null ? '–' : pct(meta.miou))]);
    for (const [key, v] of meta.summary) rows.push([key, v]);
    const box = $('facts');
    for (const [key, v] of rows) {
      const d = document.createElement('div');
      const s = document.createElement('span');
      s.className = 'k';
      s.textContent = key + ': ';
      d.append(s, document.createTextNode(String(v)));
      box.append(d);
    }
  }

  function modeButtons() {
    const box = $('modes');
    MODES.forEach((m, i) => {
      if (!meta.modes.includes(m)) return;
      const b = document.createElement('button');
      b.textContent = (i + 1) + ' ' + TITLES[m];
      b.dataset.mode = m;
      b.title = 'key ' + (i + 1);
      b.addEventListener('click', () => setMode(m));
      box.append(b);
    });
  }

  function legend() {
    const box = $('legend');
    box.replaceChildren();
    const key = keyName(state.mode);
    if (key === null) {
      box.textContent = 'No class labels in this file.';
      return;
    }
    const counts = meta.counts[key];
    const total = counts.reduce((a, b) => a + b, 0) || 1;
    const head = document.createElement('div');
    head.className = 'head';
    head.textContent = 'classes (' + (key === 'pred' ? 'prediction' : 'ground truth') + '): share of points' +
      (meta.iou ? ' · IoU' : '');
    box.append(head);
    if (state.mode === 'error') {
      const e = document.createElement('div');
      e.className = 'note';
      e.textContent = 'grey: correct, red: wrong (' + pct(meta.wrong / Math.max(meta.points, 1)) + ' of the points)';
      box.append(e);
    }
    meta.present.forEach((i) => {
      const c = meta.classes[i];
      const row = document.createElement('button');
      row.className = 'row' + (hidden[i] ? ' off' : '');
      row.dataset.cls = String(i);
      row.title = 'click to hide or show';
      const sw = document.createElement('span');
      sw.className = 'sw';
      sw.style.background = 'rgb(' + c.colour.map((v) => v | 0).join(',') + ')';
      const name = document.createElement('span');
      name.textContent = c.name;
      const share = document.createElement('span');
      share.className = 'num';
      share.textContent = pct(counts[i] / total);
      const iou = document.createElement('span');
      iou.className = 'num';
      iou.textContent = meta.iou ? (meta.iou[i] === null ? '–' : pct(meta.iou[i])) : '';
      row.append(sw, name, share, iou);
      row.addEventListener('click', () => toggleClass(i));
      box.append(row);
    });
  }

  // ------------------------------------------------------------------ drawing
  let pending = false, started = false;
  function requestRender() {
    if (pending) return;
    pending = true;
    requestAnimationFrame(draw);
  }

  // While the view moves, a browser that draws slowly (no GPU: WebGL on the CPU) draws every m-th
  // point, m sized from the time between frames while moving (Chrome runs the next animation
  // frame only once the previous one is drawn); everything is drawn again 200 ms after the last move.
  let points, fullGeom, fastGeom = null, moving = false, idleTimer = 0, lastDraw = 0, slow = 0;
  function draw(now) {
    pending = false;
    if (moving && !fastGeom && lastDraw) {
      slow = now - lastDraw > 60 ? slow + 1 : 0;
      if (slow >= 2) setupFastGeometry(now - lastDraw);
    }
    lastDraw = moving ? now : 0;
    points.geometry = moving && fastGeom ? fastGeom : fullGeom;
    renderer.render(scene, camera);
  }
  function moved() {
    moving = true;
    clearTimeout(idleTimer);
    idleTimer = setTimeout(() => { moving = false; requestRender(); }, 200);
  }
  function setupFastGeometry(frameMs) {
    const m = Math.ceil(frameMs / 25);
    // Below ~200k points a slow frame is the fixed cost of drawing the window, not the points.
    if (m < 2 || fastGeom || n < 200000) return;
    const idx = new Uint32Array(Math.ceil(n / m));
    for (let j = 0; j < idx.length; j++) idx[j] = j * m;
    fastGeom = new THREE.BufferGeometry();
    for (const [name, attr] of Object.entries(fullGeom.attributes)) fastGeom.setAttribute(name, attr);
    fastGeom.setIndex(new THREE.BufferAttribute(idx, 1));
  }
  const nextFrame = () => new Promise((resolve) => requestAnimationFrame(resolve));
  // Returns when the GPU has finished every command given so far: reading a pixel back waits for
  // it (and prints a "GPU stall" performance note on the console, so only the benchmark calls it).
  function finished() {
    const gl = renderer.getContext();
    gl.readPixels(0, 0, 1, 1, gl.RGBA, gl.UNSIGNED_BYTE, new Uint8Array(4));
    return performance.now();
  }

  function paletteData() {
    const d = new Uint8Array(Math.max(k, 1) * 4);
    meta.classes.forEach((c, i) => {
      d.set(c.colour, 4 * i);
      d[4 * i + 3] = hidden[i] ? 0 : 255;
    });
    return d;
  }

  function setMode(m) {
    if (!meta.modes.includes(m)) return;
    state.mode = m;
    material.uniforms.mode.value = MODES.indexOf(m);
    for (const b of $('modes').children) b.classList.toggle('on', b.dataset.mode === m);
    legend();
    requestRender();
    if (started && statusEl.dataset.state !== 'error') showReady();
  }

  function toggleClass(i) {
    hidden[i] = hidden[i] ? 0 : 1;
    paletteTex.image.data.set(paletteData());
    paletteTex.needsUpdate = true;
    legend();
    requestRender();
    if (started && statusEl.dataset.state !== 'error') showReady();
  }

  function setSize(s) {
    state.size = Math.min(12, Math.max(1, s));
    material.uniforms.size.value = state.size * renderer.getPixelRatio();
    $('size').value = String(state.size);
    $('sizev').textContent = state.size.toFixed(1) + ' px';
    requestRender();
  }

  const VERTEX = `
    uniform sampler2D palette;
    uniform float nClasses;
    uniform int mode;
    uniform float size;
    uniform vec2 zRange;
    uniform vec3 okColour;
    uniform vec3 wrongColour;
    uniform vec3 noLabelColour;
    #ifdef HAS_RGB
    attribute vec3 rgb;
    #endif
    #ifdef HAS_PRED
    attribute float pred;
    #endif
    #ifdef HAS_GT
    attribute float gt;
    #endif
    varying vec3 vColour;
    vec4 cls(float c) { return texture2D(palette, vec2((c + 0.5) / nClasses, 0.5)); }
    void main() {
      #if defined(HAS_PRED) && defined(HAS_GT)
      float key = mode >= 2 ? gt : pred;
      #elif defined(HAS_PRED)
      float key = pred;
      #elif defined(HAS_GT)
      float key = gt;
      #endif
      #if defined(HAS_PRED) || defined(HAS_GT)
      // ground truth k (one above the classes) is a point without ground truth: never hidden
      if (key < nClasses - 0.5 && cls(key).a < 0.5) { gl_Position = vec4(2.0, 2.0, 2.0, 1.0); gl_PointSize = 0.0; return; }
      #endif
      #ifdef HAS_RGB
      vec3 c = rgb;
      #else
      float t = clamp((position.z - zRange.x) / max(zRange.y - zRange.x, 1e-9), 0.0, 1.0);
      vec3 c = mix(vec3(40.0, 60.0, 150.0), vec3(250.0, 230.0, 120.0), t) / 255.0;
      #endif
      #ifdef HAS_PRED
      if (mode == 1) c = cls(pred).rgb;
      #endif
      #ifdef HAS_GT
      if (mode == 2) c = gt > nClasses - 0.5 ? noLabelColour : cls(gt).rgb;
      #endif
      #if defined(HAS_PRED) && defined(HAS_GT)
      if (mode == 3) c = gt > nClasses - 0.5 ? noLabelColour : (abs(pred - gt) < 0.5 ? okColour : wrongColour);
      #endif
      vColour = c;
      gl_PointSize = size;
      gl_Position = projectionMatrix * modelViewMatrix * vec4(position, 1.0);
    }`;
  const FRAGMENT = `
    varying vec3 vColour;
    void main() { gl_FragColor = vec4(vColour, 1.0); }`;

  function build(pos, arrays) {
    n = meta.shown;
    const lo = meta.bbox.lo, ext = meta.bbox.ext;
    // Positions centred on the box so float32 keeps sub-millimetre detail far from the origin.
    P = new Float32Array(3 * n);
    for (let a = 0; a < 3; a++) {
      const s = ext[a] / 65535, off = -ext[a] / 2;
      for (let i = a; i < 3 * n; i += 3) P[i] = pos[i] * s + off;
    }
    const geom = new THREE.BufferGeometry();
    geom.setAttribute('position', new THREE.BufferAttribute(P, 3));
    const defines = {};
    if (arrays.rgb) { geom.setAttribute('rgb', new THREE.BufferAttribute(arrays.rgb, 3, true)); defines.HAS_RGB = ''; }
    if (arrays.pred) { geom.setAttribute('pred', new THREE.BufferAttribute(arrays.pred, 1)); defines.HAS_PRED = ''; }
    if (arrays.gt) { geom.setAttribute('gt', new THREE.BufferAttribute(arrays.gt, 1)); defines.HAS_GT = ''; }
    keyArrays = { pred: arrays.pred || null, gt: arrays.gt || null };
    conf = arrays.conf || null;
    const r = Math.max(0.5 * Math.hypot(ext[0], ext[1], ext[2]), 1e-6);

    paletteTex = new THREE.DataTexture(paletteData(), Math.max(k, 1), 1, THREE.RGBAFormat, THREE.UnsignedByteType);
    paletteTex.magFilter = paletteTex.minFilter = THREE.NearestFilter;
    paletteTex.needsUpdate = true;
    const ok = meta.error_colours.correct.map((v) => v / 255), bad = meta.error_colours.wrong.map((v) => v / 255);
    const none = (meta.error_colours.no_label || [120, 120, 120]).map((v) => v / 255);
    material = new THREE.ShaderMaterial({
      defines, vertexShader: VERTEX, fragmentShader: FRAGMENT,
      uniforms: {
        palette: { value: paletteTex }, nClasses: { value: Math.max(k, 1) }, mode: { value: MODES.indexOf(state.mode) },
        size: { value: 2 }, zRange: { value: [-ext[2] / 2, ext[2] / 2] },
        okColour: { value: new THREE.Vector3(...ok) }, wrongColour: { value: new THREE.Vector3(...bad) },
        noLabelColour: { value: new THREE.Vector3(...none) },
      },
    });
    fullGeom = geom;
    points = new THREE.Points(geom, material);
    points.frustumCulled = false;
    scene = new THREE.Scene();
    scene.add(points);

    const view = $('view');
    renderer = new THREE.WebGLRenderer({ antialias: false, preserveDrawingBuffer: true });
    renderer.setPixelRatio(window.devicePixelRatio || 1);
    renderer.setClearColor(0xffffff, 1);
    view.append(renderer.domElement);
    camera = new THREE.PerspectiveCamera(45, 1, r / 1000, r * 100);
    camera.up.set(0, 0, 1);
    const d = new THREE.Vector3(-0.6, -0.8, 1.4).normalize();  // the PNG's iso view: z up, 54 deg above
    camera.position.copy(d.multiplyScalar(1.1 * r / Math.sin((45 / 2) * Math.PI / 180)));
    controls = new THREE.OrbitControls(camera, renderer.domElement);
    controls.target.set(0, 0, 0);
    controls.update();
    controls.saveState();
    controls.addEventListener('change', () => { moved(); requestRender(); });
    const resize = () => {
      const w = Math.max(view.clientWidth, 1), h = Math.max(view.clientHeight, 1);
      renderer.setSize(w, h, false);
      camera.aspect = w / h;
      camera.updateProjectionMatrix();
      requestRender();
    };
    new ResizeObserver(resize).observe(view);
    resize();
  }

  // ------------------------------------------------------------------ picking
  // Nearest point to the camera within a few pixels of the cursor, among the points drawn:
  // one pass over the positions (a few ms per million points), only on hover pauses and clicks.
  function pick(px, py) {
    const w = renderer.domElement.clientWidth, h = renderer.domElement.clientHeight;
    camera.updateMatrixWorld();
    const m = new THREE.Matrix4().multiplyMatrices(camera.projectionMatrix, camera.matrixWorldInverse).elements;
    const rad = Math.max(4, state.size / 2 + 2), key = keyArrays[keyName(state.mode)] || null;
    let best = -1, bestW = Infinity;
    for (let i = 0; i < n; i++) {
      const x = P[3 * i], y = P[3 * i + 1], z = P[3 * i + 2];
      const cw = m[3] * x + m[7] * y + m[11] * z + m[15];
      if (cw <= 0 || cw >= bestW) continue;
      const dx = ((m[0] * x + m[4] * y + m[8] * z + m[12]) / cw + 1) * w / 2 - px;
      if (dx > rad || dx < -rad) continue;
      const dy = (1 - (m[1] * x + m[5] * y + m[9] * z + m[13]) / cw) * h / 2 - py;
      if (dy > rad || dy < -rad) continue;
      if (key && key[i] < k && hidden[key[i]]) continue;
      best = i;
      bestW = cw;
    }
    return best;
  }

  function describe(i) {
    if (i < 0) return '';
    const lines = [];
    const name = (c) => (c < k ? meta.classes[c].name : 'class ' + c);
    if (keyArrays.pred) lines.push('prediction: ' + name(keyArrays.pred[i]) + (conf ? ' (confidence ' + pct(conf[i] / 255) + ')' : ''));
    if (keyArrays.gt) lines.push('ground truth: ' + (keyArrays.gt[i] === k ? 'none (not scored)' : name(keyArrays.gt[i])));
    if (!keyArrays.pred && !keyArrays.gt) lines.push('no class labels');
    const lo = meta.bbox.lo, ext = meta.bbox.ext;
    lines.push('x y z: ' + [0, 1, 2].map((a) => (P[3 * i + a] + lo[a] + ext[a] / 2).toFixed(3)).join(' '));
    return lines.join('\n');
  }

  function setupPointer() {
    const canvas = renderer.domElement, tip = $('tip');
    let down = null, timer = 0;
    const local = (e) => { const r = canvas.getBoundingClientRect(); return [e.clientX - r.left, e.clientY - r.top]; };
    canvas.addEventListener('pointerdown', (e) => { down = local(e); tip.style.display = 'none'; });
    canvas.addEventListener('pointerup', (e) => {
      const [x, y] = local(e);
      if (down && Math.hypot(x - down[0], y - down[1]) < 4) pinPick(x, y);
      down = null;
    });
    canvas.addEventListener('pointermove', (e) => {
      clearTimeout(timer);
      tip.style.display = 'none';
      if (e.buttons) return;
      const [x, y] = local(e);
      timer = setTimeout(() => {
        const text = describe(pick(x, y));
        if (!text) return;
        tip.textContent = text;
        tip.style.left = (x + 14) + 'px';
        tip.style.top = (y + 14) + 'px';
        tip.style.display = 'block';
      }, 80);
    });
    canvas.addEventListener('pointerleave', () => { clearTimeout(timer); tip.style.display = 'none'; });
  }

  function pinPick(x, y) {
    const i = pick(x, y);
    $('pick').textContent = i < 0 ? 'no point there' : 'point ' + fmt(i) + '\n' + describe(i);
  }

  function setupKeys() {
    window.addEventListener('keydown', (e) => {
      if (e.ctrlKey || e.metaKey || e.altKey) return;
      const i = ['1', '2', '3', '4'].indexOf(e.key);
      if (i >= 0) setMode(MODES[i]);
      else if (e.key === 'r' || e.key === 'R') { controls.reset(); requestRender(); }
      else if (e.key === '+' || e.key === '=') setSize(state.size + 0.5);
      else if (e.key === '-') setSize(state.size - 0.5);
    });
    $('reset').addEventListener('click', () => { controls.reset(); requestRender(); });
    $('size').addEventListener('input', (e) => setSize(Number(e.target.value)));
  }

  function showReady() {
    statusEl.dataset.state = 'ready';
    statusEl.textContent = 'ready: ' + TITLES[state.mode].toLowerCase() + ', ' + fmt(n) + ' points drawn' +
      ', hidden: ' + (meta.classes.filter((c, i) => hidden[i]).map((c) => c.name).join(', ') || 'none');
  }

  // ------------------------------------------------------------------ URL hash
  // #mode=pred&size=3&hide=0,2&keys=4&legend=2&pick=300,200&ui=0: a linkable view, and what the
  // browser tests drive the page with (keys go through the same handler as typed keys).
  function applyHash() {
    const h = new URLSearchParams(location.hash.slice(1));
    if (h.get('ui') === '0') document.body.classList.add('noui');
    if (h.has('size')) setSize(Number(h.get('size')));
    if (h.has('mode')) setMode(h.get('mode'));
    for (const c of (h.get('hide') || '').split(',').filter(Boolean)) {
      const i = Number(c);
      if (Number.isInteger(i) && i >= 0 && i < k && !hidden[i]) toggleClass(i);
    }
    for (const ch of h.get('keys') || '') window.dispatchEvent(new KeyboardEvent('keydown', { key: ch }));
    for (const c of (h.get('legend') || '').split(',').filter(Boolean)) {
      const row = document.querySelector('#legend button.row[data-cls="' + (Number(c) | 0) + '"]');
      if (row) row.click();
    }
    if (h.has('pick')) {
      const [x, y] = h.get('pick').split(',').map(Number);
      pinPick(x, y);
    }
  }

  // ------------------------------------------------------------------ start
  async function main() {
    facts();
    modeButtons();
    if (typeof DecompressionStream === 'undefined') throw new Error('this browser has no DecompressionStream (Chrome 80+, Firefox 113+, Safari 16.4+ needed)');
    const specs = meta.arrays;
    const names = Object.keys(specs);
    const got = await Promise.all(names.map((a) => array(specs[a])));
    const arrays = {};
    names.forEach((a, i) => { arrays[a] = got[i]; });
    const tDecoded = performance.now();
    try {
      build(arrays.pos, arrays);
    } catch (e) {
      throw new Error('WebGL is not available in this browser (' + (e.message || e) + ')');
    }
    setupPointer();
    setupKeys();
    setSize(state.size);
    setMode(state.mode);
    applyHash();
    window.addEventListener('hashchange', applyHash);
    // The first frame on screen (it includes compiling the shaders), then one timed frame.
    await nextFrame();
    draw(performance.now());    // the first frame (it compiles the shaders)
    const tReady = performance.now();
    started = true;
    if (statusEl.dataset.state !== 'error') showReady();
    return { decode_ms: tDecoded - t0, ready_ms: tReady, points: n };
  }

  const ready = main();
  ready.catch((e) => fail(e.message || String(e)));

  // For tools/bench_html_view.py (nothing is sent anywhere): when the first frame was finished,
  // then frames per second while the view turns, drawing every point and as while moving.
  async function turn(frames, geom) {
    const start = camera.position.clone();
    let i = 0;
    const t = performance.now();
    await new Promise((resolve) => {
      const step = () => {
        const a = (2 * Math.PI * i) / frames;
        camera.position.set(start.x * Math.cos(a) - start.y * Math.sin(a), start.x * Math.sin(a) + start.y * Math.cos(a), start.z);
        camera.lookAt(controls.target);
        points.geometry = geom;
        renderer.render(scene, camera);
        if (++i < frames) requestAnimationFrame(step); else resolve();
      };
      requestAnimationFrame(step);
    });
    const ms = finished() - t;
    camera.position.copy(start);
    camera.lookAt(controls.target);
    return { frames, ms, fps: (1000 * frames) / ms, points: geom.index ? geom.index.count : n };
  }
  async function bench(frames) {
    const r = await ready;
    const firstFrameMs = finished();
    const full = await turn(frames, fullGeom);
    setupFastGeometry(full.ms / frames);
    const fast = fastGeom ? await turn(frames, fastGeom) : null;
    draw(performance.now());
    return { ...r, first_frame_ms: firstFrameMs, full, moving: fast };
  }
  window.pointseg = { ready, bench };
})();
