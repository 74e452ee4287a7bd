#!/usr/bin/env node
import { main } from '../dist/cli/main.js';

const status = await main(process.argv);
process.exit(status);
