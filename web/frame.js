// Work done once per frame: `nextFrame(fn)` runs `fn` at the next animation frame, or after
// FALLBACK_MS when no frame comes first (a tab in the background gets none).

const FALLBACK_MS = 250;

/** Run `fn` once, at the next animation frame or after FALLBACK_MS, whichever is first. */
export function nextFrame(/** @type {() => void} */ fn) {
  let done = false;
  const run = () => {
    if (done) return;
    done = true;
    cancelAnimationFrame(raf);
    clearTimeout(timer);
    fn();
  };
  const raf = requestAnimationFrame(run);
  const timer = setTimeout(run, FALLBACK_MS);
}
