// The serial console in xterm.js over the console websocket
// (GET /v1/domains/NAME/console: binary frames both ways; history=N first
// replays the last N bytes of the log, so the scrollback starts from there).
import { useEffect, useRef, useState } from 'preact/hooks';
import { Terminal } from '@xterm/xterm';
import { FitAddon } from '@xterm/addon-fit';
import '@xterm/xterm/css/xterm.css';
import { dpath, wsUrl } from '../api.js';

export function SerialConsole({ name }: { name: string }) {
  const box = useRef<HTMLDivElement>(null);
  const [status, setStatus] = useState('connecting…');
  useEffect(() => {
    const term = new Terminal({
      convertEol: false,
      cursorBlink: true,
      scrollback: 5000,
      fontFamily: 'ui-monospace, "DejaVu Sans Mono", Menlo, Consolas, monospace',
      fontSize: 14,
      lineHeight: 1.2,
      theme: { background: '#0f1720', foreground: '#e2e8f0' },
    });
    const fit = new FitAddon();
    term.loadAddon(fit);
    term.open(box.current!);
    fit.fit();
    const ws = new WebSocket(wsUrl(`${dpath(name)}/console?history=65536`));
    ws.binaryType = 'arraybuffer';
    const enc = new TextEncoder();
    ws.onopen = () => {
      setStatus('connected');
      term.focus();
    };
    ws.onmessage = (ev) => term.write(new Uint8Array(ev.data as ArrayBuffer));
    ws.onclose = () => setStatus('disconnected');
    const input = term.onData((d) => ws.readyState === WebSocket.OPEN && ws.send(enc.encode(d)));
    const onResize = () => fit.fit();
    window.addEventListener('resize', onResize);
    return () => {
      window.removeEventListener('resize', onResize);
      input.dispose();
      ws.close();
      term.dispose();
    };
  }, [name]);
  return (
    <div class="console">
      <div class="console-bar">
        <span>Serial console of <b>{name}</b></span>
        <span class={`console-status ${status}`} data-status={status}>{status}</span>
      </div>
      <div class="console-term" ref={box} data-testid="console" />
    </div>
  );
}
