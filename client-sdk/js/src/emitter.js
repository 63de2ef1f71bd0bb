// A tiny typed event emitter (no dependency on Node's events module, so it runs in browsers).

/**
 * @template {Record<string, any>} E  event name → the context its listeners receive
 */
export class Emitter {
  constructor() {
    /** @type {Map<keyof E, Set<(ctx: any) => void>>} @private */
    this._listeners = new Map();
  }

  /**
   * Add a listener; returns a function that removes it.
   * @template {keyof E & string} K
   * @param {K} event
   * @param {(ctx: E[K]) => void} listener
   * @returns {() => void}
   */
  on(event, listener) {
    let set = this._listeners.get(event);
    if (!set) {
      set = new Set();
      this._listeners.set(event, set);
    }
    set.add(listener);
    return () => this.off(event, listener);
  }

  /**
   * A listener called once.
   * @template {keyof E & string} K
   * @param {K} event
   * @param {(ctx: E[K]) => void} listener
   * @returns {() => void}
   */
  once(event, listener) {
    /** @param {E[K]} ctx */
    const wrapper = (ctx) => {
      this.off(event, wrapper);
      listener(ctx);
    };
    return this.on(event, wrapper);
  }

  /**
   * @template {keyof E & string} K
   * @param {K} event
   * @param {(ctx: E[K]) => void} listener
   */
  off(event, listener) {
    this._listeners.get(event)?.delete(listener);
  }

  /**
   * Call every listener of `event`; a listener that throws does not stop the others (the error is
   * reported on the console, or re-thrown asynchronously when there is no console).
   * @template {keyof E & string} K
   * @param {K} event
   * @param {E[K]} ctx
   */
  emit(event, ctx) {
    const set = this._listeners.get(event);
    if (!set || set.size === 0) return;
    for (const listener of [...set]) {
      try {
        listener(ctx);
      } catch (err) {
        reportListenerError(err);
      }
    }
  }

  /**
   * The number of listeners of `event`.
   * @param {keyof E & string} event
   * @returns {number}
   */
  listenerCount(event) {
    return this._listeners.get(event)?.size ?? 0;
  }
}

/** @param {unknown} err */
function reportListenerError(err) {
  if (typeof console !== 'undefined' && console.error) {
    console.error('gpuscout: an event listener threw', err);
  } else {
    setTimeout(() => {
      throw err;
    }, 0);
  }
}
