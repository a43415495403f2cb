// A small line graph in SVG: the last samples of one series, with its scale.
interface Props {
  values: number[];
  max?: number;
  width?: number;
  height?: number;
  color?: string;
  label?: string;
  unit?: string;
  /** Show at the top left what the top of the graph stands for. */
  showScale?: boolean;
}

export function Sparkline({ values, max, width = 160, height = 36, color = '#2b6cb0', label, unit = '', showScale = false }: Props) {
  const top = Math.max(max ?? 0, ...values, 1e-9);
  const n = Math.max(values.length, 2);
  const pts = values.map((v, i) => `${((i + (n - values.length)) / (n - 1)) * width},${height - 2 - (v / top) * (height - 4)}`);
  const lastV = values.length ? values[values.length - 1]! : null;
  return (
    <div class="spark" title={label}>
      <svg width={width} height={height} viewBox={`0 0 ${width} ${height}`} role="img" aria-label={label}>
        <rect x="0" y="0" width={width} height={height} class="spark-bg" />
        {pts.length > 1 && <polyline points={`0,${height} ${pts.join(' ')} ${width},${height}`} fill={color} fill-opacity="0.12" stroke="none" />}
        {pts.length > 1 && <polyline points={pts.join(' ')} fill="none" stroke={color} stroke-width="1.5" />}
        {showScale && <text x="4" y="11" class="spark-scale">{`${Math.round(top)}${unit}`}</text>}
      </svg>
      <span class="spark-value">{lastV === null ? '–' : `${lastV < 10 ? lastV.toFixed(1) : Math.round(lastV)}${unit}`}</span>
    </div>
  );
}
