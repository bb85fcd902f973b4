/** A refused request: the server's problem+json (RFC 9457), or a network failure (status 0). */
export class TidingsError extends Error {
  /**
   * @param {number} status HTTP status, 0 when no response came
   * @param {import("./events.js").Problem | null} problem the problem+json body, if any
   * @param {string} [message]
   */
  constructor(status, problem, message) {
    super(message ?? problem?.detail ?? problem?.title ?? `HTTP ${status}`);
    this.name = "TidingsError";
    /** HTTP status; 0 when the server could not be reached. */
    this.status = status;
    /** The problem+json body, or null. */
    this.problem = problem;
    /** The problem's stable `code` (such as `validation_failed`), or null. */
    this.code = problem?.code ?? null;
  }
}
