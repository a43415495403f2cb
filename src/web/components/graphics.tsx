// The graphical console of HVM guests (vnc = 1): noVNC's RFB client on
// xvmd's VNC websocket. The route comes with HVM support: the page asks for
// a single-use token (POST /v1/domains/NAME/vnc/token), then opens
// /v1/domains/NAME/vnc/ws?token=… which carries QEMU's RFB stream. When
// this xvmd has no such route (the OpenAPI document lists every route), the
// tab says so.
import { useEffect, useRef, useState } from 'preact/hooks';
import { dpath, get, post, wsUrl, type DomainInfo } from '../api.js';

export const VNC_WS_ROUTE = '/v1/domains/{name}/vnc/ws';

type Status = 'checking' | 'unavailable' | 'stopped' | 'connecting' | 'connected' | 'disconnected' | string;

export function GraphicsConsole({ d }: { d: DomainInfo }) {
  const [available, setAvailable] = useState<boolean | null>(null);
  const [status, setStatus] = useState<Status>('checking');
  const screen = useRef<HTMLDivElement>(null);
  const rfbRef = useRef<{ sendCtrlAltDel(): void; disconnect(): void } | null>(null);
  const running = d.domid !== null;

  useEffect(() => {
    get<{ paths?: Record<string, unknown> }>('/v1/openapi.json').then(
      (doc) => setAvailable(Boolean(doc.paths?.[VNC_WS_ROUTE])),
      () => setAvailable(false),
    );
  }, []);

  useEffect(() => {
    if (!available) {
      if (available === false) setStatus('unavailable');
      return;
    }
    if (!running) {
      setStatus('stopped');
      return;
    }
    let closed = false;
    let rfb: import('@novnc/novnc').default | undefined;
    setStatus('connecting');
    (async () => {
      // noVNC is loaded only when a graphical console is opened.
      const [{ default: RFB }, tok] = await Promise.all([import('@novnc/novnc'), post<{ path: string }>(`${dpath(d.name)}/vnc/token`)]);
      if (closed || !screen.current) return;
      rfb = new RFB(screen.current, wsUrl(tok.path), { shared: true });
      rfb.scaleViewport = true;
      rfb.background = '#0f1720';
      rfb.addEventListener('connect', () => setStatus('connected'));
      rfb.addEventListener('disconnect', () => setStatus('disconnected'));
      rfbRef.current = rfb;
    })().catch((e: Error) => setStatus(`error: ${e.message}`));
    return () => {
      closed = true;
      rfbRef.current = null;
      rfb?.disconnect();
    };
  }, [available, running, d.name, d.domid]);

  if (available === false) {
    return (
      <div class="card">
        <p class="muted" data-testid="graphics-unavailable">
          The graphical console needs xvmd's VNC websocket (<code>{VNC_WS_ROUTE}</code>), which this xvmd does not serve.
        </p>
      </div>
    );
  }
  return (
    <div class="console">
      <div class="console-bar">
        <span>Screen of <b>{d.name}</b></span>
        <span>
          {status === 'connected' && <button class="small-btn" onClick={() => rfbRef.current?.sendCtrlAltDel()}>Ctrl-Alt-Del</button>}{' '}
          <span class={`console-status ${status}`} data-status={status}>{status === 'stopped' ? 'domain not running' : status}</span>
        </span>
      </div>
      <div class="vnc-screen" ref={screen} data-testid="vnc-screen" />
    </div>
  );
}
