/**
 * Model persistence on a BlobStore in the TF.js LayersModel format (model.json + one weights.bin), loadable
 * as is by tf.loadLayersModel in a browser or by tfjs-node: nothing Myeloscope-specific but the custom
 * SeededDropout layer, which model.ts registers (imported here for that side effect).
 */
import * as tf from '@tensorflow/tfjs';
import type { BlobStore } from '../store.ts';
import { InvalidInputError } from '../errors.ts';
import './model.ts';

export const MODEL_JSON = 'model.json';
export const WEIGHTS_BIN = 'weights.bin';

interface ModelJson {
  modelTopology: object;
  format?: string;
  generatedBy?: string;
  convertedBy?: string | null;
  trainingConfig?: tf.io.TrainingConfig;
  weightsManifest: tf.io.WeightsManifestConfig;
}

/** One contiguous copy of several byte ranges (tfjs may hand over one or several weight buffers). */
function concatBytes(parts: readonly Uint8Array[]): Uint8Array<ArrayBuffer> {
  const out = new Uint8Array(parts.reduce((n, p) => n + p.byteLength, 0));
  let offset = 0;
  for (const p of parts) {
    out.set(p, offset);
    offset += p.byteLength;
  }
  return out;
}

function weightBytes(data: tf.io.WeightData | undefined): Uint8Array<ArrayBuffer> {
  if (data === undefined) return new Uint8Array(0);
  return concatBytes((Array.isArray(data) ? data : [data]).map((b) => new Uint8Array(b)));
}

/** Writes `${prefix}model.json` and `${prefix}weights.bin`. The prefix is used verbatim (end it with '/'). */
export async function saveModel(model: tf.LayersModel, store: BlobStore, prefix: string): Promise<tf.io.SaveResult> {
  return model.save(
    tf.io.withSaveHandler(async (artifacts) => {
      if (artifacts.modelTopology instanceof ArrayBuffer || artifacts.modelTopology === undefined) {
        throw new Error('saveModel: expected a JSON model topology (LayersModel)');
      }
      const json: ModelJson = {
        modelTopology: artifacts.modelTopology,
        format: artifacts.format ?? 'layers-model',
        generatedBy: artifacts.generatedBy,
        convertedBy: artifacts.convertedBy ?? null,
        weightsManifest: [{ paths: [`./${WEIGHTS_BIN}`], weights: artifacts.weightSpecs ?? [] }],
      };
      if (artifacts.trainingConfig !== undefined) json.trainingConfig = artifacts.trainingConfig;
      const weights = weightBytes(artifacts.weightData);
      // Weights first: a reader that sees model.json can rely on weights.bin being there.
      await store.put(`${prefix}${WEIGHTS_BIN}`, weights, 'application/octet-stream');
      await store.put(`${prefix}${MODEL_JSON}`, JSON.stringify(json), 'application/json');
      return {
        modelArtifactsInfo: {
          dateSaved: new Date(),
          modelTopologyType: 'JSON',
          modelTopologyBytes: JSON.stringify(artifacts.modelTopology).length,
          weightSpecsBytes: JSON.stringify(json.weightsManifest).length,
          weightDataBytes: weights.byteLength,
        },
      };
    }),
  );
}

/** An IOHandler that reads `${prefix}model.json` and the weight files it names, relative to the prefix. */
export function blobStoreHandler(store: BlobStore, prefix: string): tf.io.IOHandler {
  return {
    load: async (): Promise<tf.io.ModelArtifacts> => {
      const raw = new TextDecoder().decode(await store.get(`${prefix}${MODEL_JSON}`));
      let json: ModelJson;
      try {
        json = JSON.parse(raw) as ModelJson;
      } catch (err) {
        throw new InvalidInputError(`${prefix}${MODEL_JSON} is not JSON: ${String(err)}`);
      }
      if (typeof json.modelTopology !== 'object' || !Array.isArray(json.weightsManifest)) {
        throw new InvalidInputError(`${prefix}${MODEL_JSON} is not a TF.js LayersModel (modelTopology/weightsManifest)`);
      }
      const weightSpecs: tf.io.WeightsManifestEntry[] = [];
      const buffers: Uint8Array[] = [];
      for (const group of json.weightsManifest) {
        weightSpecs.push(...group.weights);
        for (const p of group.paths) buffers.push(await store.get(`${prefix}${p.replace(/^\.\//, '')}`));
      }
      const weightData = concatBytes(buffers);
      const artifacts: tf.io.ModelArtifacts = {
        modelTopology: json.modelTopology,
        weightSpecs,
        weightData: weightData.buffer,
      };
      if (json.format !== undefined) artifacts.format = json.format;
      if (json.generatedBy !== undefined) artifacts.generatedBy = json.generatedBy;
      if (json.trainingConfig !== undefined) artifacts.trainingConfig = json.trainingConfig;
      return artifacts;
    },
  };
}

/** Loads a model saved by saveModel. Not compiled: call compileCellModel to train it further. */
export async function loadModel(store: BlobStore, prefix: string): Promise<tf.LayersModel> {
  return tf.loadLayersModel(blobStoreHandler(store, prefix));
}
