import { test } from 'node:test';
import assert from 'node:assert/strict';
import { parseRawKey, processedKeyFor, parseProcessedKey, segmentedKeys, runKeys } from '../layers/core/src/keys.ts';
import { decodeEventKey, encodeEventKey } from '../layers/aws/src/s3.ts';
import { clientConfig } from '../layers/aws/src/config.ts';
import { parseRunInput, runIdFromExecutionName, splitWarnings, DEFAULT_PARAMS } from '../layers/core/src/workflow.ts';
import { InvalidInputError } from '../layers/core/src/errors.ts';

test('raw keys: images, masks, nested names, bad shapes', () => {
  assert.deepEqual(parseRawKey('raw/segpc/myeloma/106.jpg'), { dataset: 'segpc', label: 'myeloma', name: '106', ext: 'jpg', isMask: false });
  assert.deepEqual(parseRawKey('raw/segpc/myeloma/masks/106.JPG'), { dataset: 'segpc', label: 'myeloma', name: '106', ext: 'jpg', isMask: true });
  assert.deepEqual(parseRawKey('raw/d/l/sub dir/a.b.tif'), { dataset: 'd', label: 'l', name: 'sub dir/a.b', ext: 'tif', isMask: false });
  assert.equal(parseRawKey('raw/d/l/noext').ext, '');
  assert.throws(() => parseRawKey('raw/d/only-two'), InvalidInputError);
  assert.throws(() => parseRawKey('other/d/l/x.jpg'), InvalidInputError);
  assert.throws(() => parseRawKey('raw/d//x.jpg'), InvalidInputError);
});

test('processed keys pair an image with its mask either way round', () => {
  const img = processedKeyFor(parseRawKey('raw/d/l/a b.jpg'));
  const mask = processedKeyFor(parseRawKey('raw/d/l/masks/a b.bmp'));
  assert.equal(img, 'processed/d/l/a b.png');
  assert.equal(mask, 'processed/d/l/masks/a b.png');
  for (const k of [img, mask]) {
    const p = parseProcessedKey(k);
    assert.equal(p.imageKey, img);
    assert.equal(p.maskKey, mask);
  }
  assert.equal(parseProcessedKey(mask).isMask, true);
  assert.equal(segmentedKeys(parseProcessedKey(img)).crop(7), 'segmented/d/l/a b/crops/0007.png');
  assert.throws(() => parseProcessedKey('processed/d/l/x.json'), InvalidInputError);
});

test('S3 event keys are encoded as S3 encodes them and decode back', () => {
  assert.equal(encodeEventKey('raw/red flower.jpg'), 'raw/red+flower.jpg');
  assert.equal(encodeEventKey('raw/a+b.jpg'), 'raw/a%2Bb.jpg');
  assert.equal(encodeEventKey('raw/Zürich.jpg'), 'raw/Z%C3%BCrich.jpg');
  assert.equal(encodeEventKey('raw/(x)~*_-.jpg'), 'raw/%28x%29%7E*_-.jpg');
  for (const k of ['raw/a b+c/ü é (1).jpg', 'raw/%41 literal.png', 'raw/日本語/画像.tif', "raw/it's #1 & more?.bmp"]) {
    assert.equal(decodeEventKey(encodeEventKey(k)), k);
  }
});

test('client endpoints come from the environment', () => {
  assert.deepEqual(clientConfig('S3', {}), { region: 'us-east-1', forcePathStyle: false });
  assert.deepEqual(clientConfig('S3', { AWS_ENDPOINT_URL: 'http://127.0.0.1:4566', AWS_REGION: 'eu-west-1' }), {
    region: 'eu-west-1',
    endpoint: 'http://127.0.0.1:4566',
    forcePathStyle: true,
  });
  assert.equal(clientConfig('S3', { AWS_ENDPOINT_URL_S3: 'http://s3.local', AWS_ENDPOINT_URL: 'http://x' }).endpoint, 'http://s3.local');
  assert.equal(clientConfig('SFN', { AWS_ENDPOINT_URL_SFN: 'http://sfn.local' }).endpoint, 'http://sfn.local');
});

test('workflow input: defaults, overrides and clear errors', () => {
  assert.deepEqual(parseRunInput(undefined), { params: DEFAULT_PARAMS });
  assert.deepEqual(parseRunInput({ epochs: 3, seed: 7, runId: 'r-1' }), { runId: 'r-1', params: { ...DEFAULT_PARAMS, epochs: 3, seed: 7 } });
  assert.throws(() => parseRunInput({ epochs: 0 }), /epochs must be an integer from 1/);
  assert.throws(() => parseRunInput({ epochs: 2.5 }), /epochs/);
  assert.throws(() => parseRunInput({ epoch: 2 }), /unknown input field\(s\): epoch/);
  assert.throws(() => parseRunInput({ task: 'pixels' }), /task must be "cells" or "images"/);
  assert.equal(parseRunInput({ task: 'images' }).params.inputSize, 128);
  assert.equal(parseRunInput({ task: 'images', inputSize: 96 }).params.inputSize, 96);
  assert.throws(() => parseRunInput({ minRocAuc: 1.5 }), /minRocAuc/);
  assert.throws(() => parseRunInput({ runId: '../x' }), /runId/);
  assert.throws(() => parseRunInput([1]), /JSON object/);
  assert.equal(runIdFromExecutionName('run 2026:12:03'), 'run-2026-12-03');
  assert.throws(() => runKeys('a/b'), InvalidInputError);
});

test('splitWarnings: no validation images, or too few held-out images, are said; a sound split says nothing', () => {
  assert.deepEqual(splitWarnings({ train: 50, val: 8, test: 19 }, { valFraction: 0.1 }), []);
  const tiny = splitWarnings({ train: 3, val: 0, test: 1 }, { valFraction: 0.1 });
  assert.equal(tiny.length, 2);
  assert.match(tiny[0] ?? '', /^no validation images \(valFraction 0\.1 of 4 images rounds to none\)/);
  assert.match(tiny[1] ?? '', /^only 1 held-out image\(s\)/);
  // valFraction 0 asks for no validation: nothing to warn about.
  assert.deepEqual(splitWarnings({ train: 40, val: 0, test: 5 }, { valFraction: 0 }), []);
});
