/** The node part of the demo (stage, publish, write, unpublish, unstage) once the Node service exists. */
import type { DemoContext } from './run.js';

export async function nodeSteps(ctx: DemoContext, volume: { volume_id: string }): Promise<void> {
  ctx.say(`(node steps for ${volume.volume_id} arrive with the Node service)`);
}
