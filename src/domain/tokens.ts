/**
 * Pagination tokens of ListVolumes/ListSnapshots: "after:<last id returned>".
 * Keyset paging, so entries added or removed between pages neither repeat nor
 * shift the rest; a token we did not hand out is ABORTED (CSI).
 */
import { busy } from './errors.js';
import { isValidId } from './ids.js';

const PREFIX = 'after:';

export function tokenAfter(lastId: string): string {
  return `${PREFIX}${lastId}`;
}

/** The id to continue after ('' = from the start). */
export function parseToken(token: string): string {
  if (token === '') return '';
  const id = token.startsWith(PREFIX) ? token.slice(PREFIX.length) : '';
  if (!isValidId(id)) throw busy(`starting_token ${JSON.stringify(token.slice(0, 80))} was not handed out by this driver; start again without it`);
  return id;
}
