// Errors of the store. Every failure carries the xenstore errno *name* that
// goes on the wire (ERROR reply payload) plus a human sentence for embedders.
import { XvmError, type ErrorCode } from '../common/errors.js';

/** Error names the store sends in ERROR replies (xs_wire.h plus EQUOTA/EPERM). */
export type XsErrno =
  | 'EINVAL'
  | 'EACCES'
  | 'EEXIST'
  | 'EISDIR'
  | 'ENOENT'
  | 'ENOMEM'
  | 'ENOSPC'
  | 'EIO'
  | 'ENOTEMPTY'
  | 'ENOSYS'
  | 'EROFS'
  | 'EBUSY'
  | 'EAGAIN'
  | 'EISCONN'
  | 'E2BIG'
  | 'EPERM'
  | 'EQUOTA';

const CODE: Record<XsErrno, ErrorCode> = {
  EINVAL: 'invalid',
  EACCES: 'invalid',
  EEXIST: 'conflict',
  EISDIR: 'invalid',
  ENOENT: 'not_found',
  ENOMEM: 'unavailable',
  ENOSPC: 'unavailable',
  EIO: 'internal',
  ENOTEMPTY: 'conflict',
  ENOSYS: 'invalid',
  EROFS: 'unavailable',
  EBUSY: 'conflict',
  EAGAIN: 'conflict',
  EISCONN: 'conflict',
  E2BIG: 'invalid',
  EPERM: 'invalid',
  EQUOTA: 'unavailable',
};

export const XS_ERRNOS: readonly XsErrno[] = Object.keys(CODE) as XsErrno[];

export class StoreError extends XvmError {
  /** The xenstore error name, e.g. 'ENOENT'. */
  readonly errno: XsErrno;
  constructor(errno: XsErrno, message?: string) {
    super(CODE[errno], message ? `${errno}: ${message}` : errno);
    this.name = 'StoreError';
    this.errno = errno;
  }
}

export function isXsErrno(s: string): s is XsErrno {
  return Object.prototype.hasOwnProperty.call(CODE, s);
}
