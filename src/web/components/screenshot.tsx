// A live thumbnail of an HVM guest's screen: GET /v1/domains/NAME/screenshot
// (a PNG from QMP screendump), fetched again every few seconds — but only
// while the picture is on screen and the tab is visible, so a long list or a
// background tab costs xvmd nothing.
import { useEffect, useRef, useState } from 'preact/hooks';
import { dpath, type DomainInfo } from '../api.js';

const EVERY_MS = 3000;

export const isHvm = (d: DomainInfo) => d.config.type === 'hvm';

export function Screenshot({ d, width, link }: { d: DomainInfo; width: number; link?: string }) {
  const box = useRef<HTMLDivElement>(null);
  const [src, setSrc] = useState<string | null>(null);
  const [failed, setFailed] = useState<string | null>(null);
  const on = d.domid !== null;
  useEffect(() => {
    if (!on) return;
    let visible = false;
    let timer: ReturnType<typeof setTimeout> | undefined;
    let inflight = false;
    let url: string | null = null;
    let stopped = false;
    const shown = () => visible && document.visibilityState === 'visible';
    const fetchOne = async () => {
      timer = undefined;
      if (stopped || inflight || !shown()) return;
      inflight = true;
      try {
        const res = await fetch(`${dpath(d.name)}/screenshot`, { credentials: 'same-origin' });
        if (!res.ok) {
          const e = (await res.json().catch(() => null)) as { error?: { message?: string } } | null;
          setFailed(e?.error?.message ?? `HTTP ${res.status}`);
        } else {
          const next = URL.createObjectURL(await res.blob());
          if (url) URL.revokeObjectURL(url);
          url = next;
          if (!stopped) {
            setSrc(next);
            setFailed(null);
          }
        }
      } catch (e) {
        setFailed((e as Error).message);
      } finally {
        inflight = false;
        schedule();
      }
    };
    const schedule = () => {
      if (!stopped && shown() && timer === undefined) timer = setTimeout(() => void fetchOne(), EVERY_MS);
    };
    const io = new IntersectionObserver((entries) => {
      visible = entries.some((e) => e.isIntersecting);
      if (visible && timer === undefined && !inflight) void fetchOne();
    });
    if (box.current) io.observe(box.current);
    const onVis = () => {
      if (shown() && timer === undefined && !inflight) void fetchOne();
    };
    document.addEventListener('visibilitychange', onVis);
    return () => {
      stopped = true;
      io.disconnect();
      document.removeEventListener('visibilitychange', onVis);
      if (timer) clearTimeout(timer);
      if (url) URL.revokeObjectURL(url);
    };
  }, [d.name, on, d.domid]);
  const height = Math.round((width * 3) / 4);
  const img = src && on ? <img src={src} width={width} height={height} alt={`screen of ${d.name}`} data-testid="screenshot" /> : <span class="muted small">{!on ? 'not running' : failed ?? 'loading…'}</span>;
  return (
    <div ref={box} class="shot" style={{ width: `${width}px`, height: `${height}px` }} title={failed ?? `screen of ${d.name}, refreshed every ${EVERY_MS / 1000} s`} data-testid="screenshot-box">
      {link && src && on ? <a href={link} onClick={(e) => e.stopPropagation()}>{img}</a> : img}
    </div>
  );
}
