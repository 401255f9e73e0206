// Process entry of a gateway node. Containers run the compiled `node dist/gateway/main.js`
// directly: npm does not pass SIGTERM on, and SIGTERM is what starts the drain.
import { runNode, fatal } from './run-node.js';

runNode().catch(fatal);
