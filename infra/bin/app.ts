#!/usr/bin/env node
/** CDK entry point (cdk.json "app"): `npx cdk synth`. */
import { createApp } from '../lib/app.ts';

createApp().app.synth();
