// Runs every graphql-http server audit against the URL given as the first
// argument; prints one line an audit and, last, the counts as JSON.
import { serverAudits } from 'graphql-http';

const url = process.argv[2];
const counts = { ok: 0, notice: 0, warn: 0, error: 0 };
for (const audit of serverAudits({ url, fetchFn: fetch })) {
  const result = await audit.fn();
  counts[result.status] = (counts[result.status] ?? 0) + 1;
  const reason = result.status === 'ok' ? '' : ` (${result.reason})`;
  console.log(`${audit.id} ${result.status}: ${audit.name}${reason}`);
  await result.response?.body?.cancel?.().catch(() => {});
}
console.log(JSON.stringify(counts));
