#!/usr/bin/env node
// The `myeloscope` bin: registers tsx's loader so the TypeScript CLI runs without a build step, from any directory.
import { register } from 'tsx/esm/api';

register();
const { run } = await import('./myeloscope.ts');
await run();
