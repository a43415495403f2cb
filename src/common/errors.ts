// Errors that cross the API carry a stable code and an HTTP status, so the
// CLI and scripts can tell "no such domain" from "bad request" without
// parsing prose.

export type ErrorCode =
  | 'not_found'
  | 'invalid'
  | 'conflict'
  | 'unavailable'
  | 'timeout'
  | 'forbidden'
  | 'internal';

const STATUS: Record<ErrorCode, number> = {
  not_found: 404,
  invalid: 400,
  conflict: 409,
  unavailable: 503,
  timeout: 504,
  forbidden: 403,
  internal: 500,
};

export class XvmError extends Error {
  readonly code: ErrorCode;
  readonly details?: unknown;
  constructor(code: ErrorCode, message: string, details?: unknown) {
    super(message);
    this.name = 'XvmError';
    this.code = code;
    this.details = details;
  }
  get status(): number {
    return STATUS[this.code];
  }
}

export function errorMessage(err: unknown): string {
  return err instanceof Error ? err.message : String(err);
}
