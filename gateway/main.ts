// Process entry of a gateway node. Run `node --import tsx gateway/main.ts` directly in
// containers: npm does not pass SIGTERM on, and SIGTERM is what starts the drain.
import { runNode, fatal } from './run-node.js';

runNode().catch(fatal);
