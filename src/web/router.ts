// Hash routes (#/domains/web1): the server serves one page, the rest is here.
import { useEffect, useState } from 'preact/hooks';

export function currentRoute(): string {
  return location.hash.replace(/^#/, '') || '/domains';
}

export function navigate(to: string): void {
  location.hash = to;
}

export function useRoute(): string {
  const [route, setRoute] = useState(currentRoute());
  useEffect(() => {
    const on = () => setRoute(currentRoute());
    window.addEventListener('hashchange', on);
    return () => window.removeEventListener('hashchange', on);
  }, []);
  return route;
}
