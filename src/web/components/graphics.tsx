// HOOK: the graphical console of HVM guests (vnc=1). The VNC websocket route
// (/v1/domains/NAME/vnc/ws) is being built with HVM support; when it lands,
// this component mounts @novnc/novnc's RFB on it. Until then it says so.
import { useEffect, useState } from 'preact/hooks';
import { dpath, type DomainInfo } from '../api.js';

export const VNC_WS_PATH = (name: string) => `${dpath(name)}/vnc/ws`;

export function GraphicsConsole({ d }: { d: DomainInfo }) {
  const [available, setAvailable] = useState<boolean | null>(null);
  useEffect(() => {
    // The OpenAPI document lists every route this xvmd has.
    fetch('/v1/openapi.json', { credentials: 'same-origin' })
      .then((r) => r.json())
      .then((doc: { paths?: Record<string, unknown> }) => setAvailable(Boolean(doc.paths?.['/v1/domains/{name}/vnc/ws'])))
      .catch(() => setAvailable(false));
  }, []);
  return (
    <div class="card">
      <h3>Graphics</h3>
      {available === null ? (
        <p class="muted">Checking…</p>
      ) : available ? (
        <p class="muted">This xvmd serves <code>{VNC_WS_PATH(d.name)}</code>; the in-page viewer (noVNC) is the next step of the web manager.</p>
      ) : (
        <p class="muted" data-testid="graphics-unavailable">
          The graphical console of {d.name} needs the VNC websocket route <code>{VNC_WS_PATH(d.name)}</code>, which this xvmd does not serve yet. Use a VNC viewer on the host for now.
        </p>
      )}
    </div>
  );
}
