// RFB "VNC Authentication" (RFC 6143 §7.2.2): the server sends a 16-byte
// random challenge, the client answers with it DES-encrypted under a key
// made from the password (first 8 bytes, zero padded, each byte's bits
// mirrored — the quirk of the original VNC code that every client copies).
//
// Node's OpenSSL 3 keeps single DES in the legacy provider only; two-key
// triple DES (EDE) with both keys equal is exactly single DES
// (E_k(D_k(E_k(x))) = E_k(x)), and it is in the default provider.
import crypto from 'node:crypto';

/** The 8-byte DES key of a VNC password. */
export function vncKey(password: string): Buffer {
  const key = Buffer.alloc(8);
  Buffer.from(password, 'latin1').copy(key, 0, 0, 8);
  for (let i = 0; i < 8; i++) {
    let b = key[i]!;
    let r = 0;
    for (let bit = 0; bit < 8; bit++) {
      r = (r << 1) | (b & 1);
      b >>= 1;
    }
    key[i] = r;
  }
  return key;
}

/** DES-ECB of `data` (a multiple of 8 bytes) under an 8-byte key. */
export function desEcb(key: Buffer, data: Buffer): Buffer {
  if (key.length !== 8) throw new Error('a DES key has 8 bytes');
  if (data.length % 8 !== 0) throw new Error('DES-ECB data must be a multiple of 8 bytes');
  const c = crypto.createCipheriv('des-ede-ecb', Buffer.concat([key, key]), null);
  c.setAutoPadding(false);
  return Buffer.concat([c.update(data), c.final()]);
}

/** What a client holding `password` answers to `challenge`. */
export function vncAuthResponse(password: string, challenge: Buffer): Buffer {
  if (challenge.length !== 16) throw new Error('a VNC challenge has 16 bytes');
  return desEcb(vncKey(password), challenge);
}

/** Constant-time check of a client's answer. */
export function vncAuthCheck(password: string, challenge: Buffer, response: Buffer): boolean {
  if (response.length !== 16) return false;
  return crypto.timingSafeEqual(vncAuthResponse(password, challenge), response);
}

const PASSWORD_CHARS = 'ABCDEFGHJKLMNPQRSTUVWXYZabcdefghijkmnopqrstuvwxyz23456789';

/** A random 8-character password (the most VNC authentication uses). */
export function randomVncPassword(): string {
  const bytes = crypto.randomBytes(8);
  return [...bytes].map((b) => PASSWORD_CHARS[b % PASSWORD_CHARS.length]).join('');
}
