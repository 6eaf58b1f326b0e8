// sharp-rt's browser-test harness: show one scene file in one web viewer at the photo's camera.
//
// harness.html?viewer=NAME&scene=URL&fov=DEGREES&depth=METRES
//   viewer: playcanvas | spark | babylon | gs3d | gsplatjs  (the npm packages, served from /node_modules),
//           or supersplatSettings (validate the settings file at `scene` with the SuperSplat viewer's rules)
//   scene:  a .ply / .compressed.ply / .splat / .sog / .spz file written by sharp-rt
//   fov:    the photo's vertical field of view; depth: a point on the optical axis to look at
//
// Each viewer is set up the way sharp-rt's README tells users to: the camera at the origin,
// looking along +z, with the photo's field of view, and the one-line orientation fix where a
// viewer shows raw (OpenCV: y down) coordinates.  A .spz is stored in its format's own frame
// (x right, y up, z back: sharp-rt's turned 180 degrees about x), so its fix differs.
// window.harness.state becomes "loaded" once the viewer has loaded the file and drawn frames,
// or "error" (window.harness.error says why).

const params = new URLSearchParams(location.search);
const viewer = params.get('viewer');
const sceneUrl = params.get('scene');
const fovDeg = Number(params.get('fov'));
const depth = Number(params.get('depth'));
window.harness = { state: 'loading', error: null };

const frames = (count) =>
  new Promise((resolve) => {
    const step = (left) => (left <= 0 ? resolve() : requestAnimationFrame(() => step(left - 1)));
    step(count);
  });

const canvas = () => {
  const element = document.createElement('canvas');
  element.width = window.innerWidth;
  element.height = window.innerHeight;
  document.body.appendChild(element);
  return element;
};

// PlayCanvas engine: the entity turned 180 degrees about z, as the SuperSplat viewer does.
async function playcanvas() {
  const pc = await import('playcanvas');
  const element = canvas();
  const device = await pc.createGraphicsDevice(element, { deviceTypes: ['webgl2'], antialias: false });
  const app = new pc.Application(element, { graphicsDevice: device });
  app.setCanvasFillMode(pc.FILLMODE_FILL_WINDOW);
  app.setCanvasResolution(pc.RESOLUTION_AUTO);
  app.start();
  const asset = new pc.Asset('scene', 'gsplat', { url: sceneUrl });
  await new Promise((resolve, reject) => {
    asset.once('load', resolve);
    asset.once('error', (error) => reject(new Error(String(error))));
    app.assets.add(asset);
    app.assets.load(asset);
  });
  const splats = new pc.Entity('splats');
  splats.addComponent('gsplat', { asset });
  splats.setLocalEulerAngles(0, 0, 180);
  app.root.addChild(splats);
  const camera = new pc.Entity('camera');
  camera.addComponent('camera', { fov: fovDeg, nearClip: 0.01, farClip: 1000, clearColor: new pc.Color(0, 0, 0, 1) });
  app.root.addChild(camera);
  camera.setPosition(0, 0, 0);
  camera.lookAt(0, 0, depth);
}

// Spark (three.js): the splat mesh turned 180 degrees about x; three.js cameras look along -z.
async function spark() {
  const THREE = await import('three');
  const { SparkRenderer, SplatMesh } = await import('@sparkjsdev/spark');
  const renderer = new THREE.WebGLRenderer({ canvas: canvas(), antialias: false });
  renderer.setSize(window.innerWidth, window.innerHeight, false);
  const scene = new THREE.Scene();
  const camera = new THREE.PerspectiveCamera(fovDeg, window.innerWidth / window.innerHeight, 0.01, 1000);
  scene.add(new SparkRenderer({ renderer }));
  const splats = new SplatMesh({ url: sceneUrl });
  if (!sceneUrl.endsWith('.spz')) splats.quaternion.set(1, 0, 0, 0); // .spz is stored y up, z back
  await splats.initialized;
  scene.add(splats);
  renderer.setAnimationLoop(() => renderer.render(scene, camera));
}

// GaussianSplats3D (three.js): the camera's up is -y.
async function gs3d() {
  const THREE = await import('three');
  const GaussianSplats3D = await import('@mkkellogg/gaussian-splats-3d');
  // Its own camera has a 50 degree field of view: pass one with the photo's, posed the same way.
  const camera = new THREE.PerspectiveCamera(fovDeg, window.innerWidth / window.innerHeight, 0.01, 1000);
  camera.up.set(0, -1, 0);
  camera.lookAt(0, 0, depth);
  const splatViewer = new GaussianSplats3D.Viewer({
    camera,
    cameraUp: [0, -1, 0],
    initialCameraPosition: [0, 0, 0],
    initialCameraLookAt: [0, 0, depth],
    sharedMemoryForWorkers: false,
    useBuiltInControls: false,
    sceneRevealMode: GaussianSplats3D.SceneRevealMode.Instant, // no fade-in: a stable picture sooner
  });
  await splatViewer.addSplatScene(sceneUrl, { showLoadingUI: false, progressiveLoad: false });
  if (splatViewer.getSplatMesh().getSplatCount() === 0) {
    throw new Error('the scene loaded with 0 splats');
  }
  splatViewer.start();
}

// gsplat.js: its camera looks along +z with y down, like sharp-rt's (it starts at z = -5).
async function gsplatjs() {
  const SPLAT = await import('gsplat');
  const element = canvas();
  const renderer = new SPLAT.WebGLRenderer(element);
  const scene = new SPLAT.Scene();
  const camera = new SPLAT.Camera();
  camera.position = new SPLAT.Vector3(0, 0, 0);
  const focal = window.innerHeight / 2 / Math.tan((fovDeg * Math.PI) / 360);
  camera.data.fx = focal;
  camera.data.fy = focal;
  if (sceneUrl.endsWith('.splat')) {
    await SPLAT.Loader.LoadAsync(sceneUrl, scene, () => {});
  } else {
    await SPLAT.PLYLoader.LoadAsync(sceneUrl, scene, () => {});
  }
  const frame = () => {
    renderer.render(scene, camera);
    requestAnimationFrame(frame);
  };
  requestAnimationFrame(frame);
}

// Babylon.js (UMD build + loaders): a universal camera at the origin targeting +z (its loader
// turns the scene upright).
async function babylon() {
  const load = (src) =>
    new Promise((resolve, reject) => {
      const script = document.createElement('script');
      script.src = src;
      script.onload = resolve;
      script.onerror = () => reject(new Error(`cannot load ${src}`));
      document.head.appendChild(script);
    });
  await load('/node_modules/babylonjs/babylon.js');
  await load('/node_modules/babylonjs-loaders/babylonjs.loaders.min.js');
  const BABYLON = window.BABYLON;
  const engine = new BABYLON.Engine(canvas(), false, { preserveDrawingBuffer: true });
  const scene = new BABYLON.Scene(engine);
  scene.clearColor = new BABYLON.Color4(0, 0, 0, 1);
  const camera = new BABYLON.UniversalCamera('camera', new BABYLON.Vector3(0, 0, 0), scene);
  camera.fov = (fovDeg * Math.PI) / 180;
  camera.minZ = 0.01;
  camera.setTarget(new BABYLON.Vector3(0, 0, depth));
  // Offline: fflate (which unzips .sog) from node_modules, and its built-in .spz parser, instead of
  // its defaults, fflate and Adobe's spz library from unpkg.com.
  const splat = { deflateURL: '/node_modules/fflate/umd/index.js', spzLibraryUrl: undefined };
  const { meshes } = await BABYLON.ImportMeshAsync(sceneUrl, scene, { pluginOptions: { splat } });
  if (sceneUrl.endsWith('.spz')) meshes[0].rotation.x = Math.PI; // .spz is stored y up, z back
  engine.runRenderLoop(() => scene.render());
}

// Not a viewer: check a settings file with the SuperSplat viewer's own validator (authoring limits on).
async function supersplatSettings() {
  const { validateSettings } = await import('supersplat-settings');
  const settings = await (await fetch(sceneUrl)).json();
  validateSettings(settings, { limits: true });
}

const viewers = { playcanvas, spark, gs3d, gsplatjs, babylon, supersplatSettings };

(async () => {
  try {
    if (!(viewer in viewers)) throw new Error(`unknown viewer ${viewer}`);
    await viewers[viewer]();
    await frames(10);
    window.harness.state = 'loaded';
  } catch (error) {
    window.harness.state = 'error';
    window.harness.error = String(error && error.stack ? error.stack : error);
  }
})();
