/** A refused request: the server's problem+json (RFC 9457), or a network failure (status 0). */
export class TidingsError extends Error {
    /**
     * @param {number} status HTTP status, 0 when no response came
     * @param {import("./events.js").Problem | null} problem the problem+json body, if any
     * @param {string} [message]
     */
    constructor(status: number, problem: import("./events.js").Problem | null, message?: string);
    /** HTTP status; 0 when the server could not be reached. */
    status: number;
    /** The problem+json body, or null. */
    problem: import("./events.js").Problem | null;
    /** The problem's stable `code` (such as `validation_failed`), or null. */
    code: string | null;
}
