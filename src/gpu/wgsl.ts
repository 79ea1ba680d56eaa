// A small WGSL preprocessor: `#if NAME`, `#elif NAME`, `#else`, `#endif` (NAME may be negated with `!`) on
// their own lines select code by the launcher's defines. Numbers go through WGSL `override` constants
// instead, so one source text serves many sizes; defines only pick dtypes and optional bindings.

export type Defines = Record<string, boolean>;

export function preprocess(source: string, defines: Defines, file = 'shader'): string {
  const out: string[] = [];
  // Each frame: is this branch active, has any branch of this #if been taken, was the parent active.
  const stack: { active: boolean; taken: boolean; parent: boolean }[] = [];
  const lines = source.split('\n');
  const active = () => (stack.length ? stack[stack.length - 1].active : true);
  const test = (expr: string, lineNo: number) => {
    const m = /^(!?)([A-Za-z_][A-Za-z0-9_]*)$/.exec(expr.trim());
    if (!m) throw new Error(`${file}:${lineNo}: bad #if expression '${expr.trim()}'`);
    const v = !!defines[m[2]];
    return m[1] ? !v : v;
  };
  lines.forEach((line, i) => {
    const t = line.trim();
    const lineNo = i + 1;
    const directive = t.startsWith('#');
    if (t.startsWith('#if ')) {
      const parent = active();
      const v = parent && test(t.slice(4), lineNo);
      stack.push({ active: v, taken: v, parent });
    } else if (t.startsWith('#elif ')) {
      const f = stack[stack.length - 1];
      if (!f) throw new Error(`${file}:${lineNo}: #elif without #if`);
      const v = f.parent && !f.taken && test(t.slice(6), lineNo);
      f.active = v;
      f.taken ||= v;
    } else if (t === '#else') {
      const f = stack[stack.length - 1];
      if (!f) throw new Error(`${file}:${lineNo}: #else without #if`);
      f.active = f.parent && !f.taken;
      f.taken = true;
    } else if (t === '#endif') {
      if (!stack.pop()) throw new Error(`${file}:${lineNo}: #endif without #if`);
    } else if (directive) {
      throw new Error(`${file}:${lineNo}: unknown directive '${t}'`);
    } else if (active()) {
      out.push(line);
      return;
    }
    out.push(''); // directives and dropped lines stay as blanks: compiler messages keep their line numbers
  });
  if (stack.length) throw new Error(`${file}: unterminated #if`);
  return out.join('\n');
}

/** Stable, readable cache key for a define set: sorted names of the true defines. */
export function definesKey(defines: Defines): string {
  return Object.keys(defines)
    .filter((k) => defines[k])
    .sort()
    .join(',');
}
