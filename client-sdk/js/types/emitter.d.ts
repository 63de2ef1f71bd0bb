/**
 * @template {Record<string, any>} E  event name → the context its listeners receive
 */
export class Emitter<E extends Record<string, any>> {
    /** @type {Map<keyof E, Set<(ctx: any) => void>>} @private */
    private _listeners;
    /**
     * Add a listener; returns a function that removes it.
     * @template {keyof E & string} K
     * @param {K} event
     * @param {(ctx: E[K]) => void} listener
     * @returns {() => void}
     */
    on<K extends keyof E & string>(event: K, listener: (ctx: E[K]) => void): () => void;
    /**
     * A listener called once.
     * @template {keyof E & string} K
     * @param {K} event
     * @param {(ctx: E[K]) => void} listener
     * @returns {() => void}
     */
    once<K extends keyof E & string>(event: K, listener: (ctx: E[K]) => void): () => void;
    /**
     * @template {keyof E & string} K
     * @param {K} event
     * @param {(ctx: E[K]) => void} listener
     */
    off<K extends keyof E & string>(event: K, listener: (ctx: E[K]) => void): void;
    /**
     * Call every listener of `event`; a listener that throws does not stop the others (the error is
     * reported on the console, or re-thrown asynchronously when there is no console).
     * @template {keyof E & string} K
     * @param {K} event
     * @param {E[K]} ctx
     */
    emit<K extends keyof E & string>(event: K, ctx: E[K]): void;
    /**
     * The number of listeners of `event`.
     * @param {keyof E & string} event
     * @returns {number}
     */
    listenerCount(event: keyof E & string): number;
}
