// Writes dist/pipeline/validate-pipeline.cjs: the pipeline schema's validator as code (Ajv's
// standalone output), made once at build time, so that gpu-guest does not load Ajv and compile the
// schema at every start. dist/pipeline/load.js uses it when present (else compiles the schema).
import { writeFileSync } from 'node:fs';
import { dirname, join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { Ajv } from 'ajv';
import standaloneCode from 'ajv/dist/standalone/index.js';
import { PIPELINE_VALIDATOR_OPTIONS, pipelineSchema } from '../dist/pipeline/schema.js';

const root = join(dirname(fileURLToPath(import.meta.url)), '..');
const ajv = new Ajv({ ...PIPELINE_VALIDATOR_OPTIONS, code: { source: true } });
const validate = ajv.compile(pipelineSchema);
writeFileSync(join(root, 'dist/pipeline/validate-pipeline.cjs'), standaloneCode.default ? standaloneCode.default(ajv, validate) : standaloneCode(ajv, validate));
