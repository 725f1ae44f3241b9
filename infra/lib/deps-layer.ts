import { fileURLToPath } from 'node:url';
import { AssetHashType, DockerImage, type ILocalBundling } from 'aws-cdk-lib';
import * as lambda from 'aws-cdk-lib/aws-lambda';
import { Construct } from 'constructs';
import { buildDepsLayer, DEFAULT_NODE_MODULES, LAYER_NODE_MODULES } from '../../layers/deps/build.ts';

export interface DepsLayerProps {
  /**
   * The node_modules to copy the packages from (Linux x86_64 builds must be installed there).
   * @default the repository's node_modules
   */
  nodeModules?: string;
}

/** Copies the packages on the machine running `cdk synth`: no Docker, no network. */
class LocalCopy implements ILocalBundling {
  constructor(private readonly nodeModules: string) {}

  tryBundle(outputDir: string): boolean {
    // Throws with the missing package's name rather than returning false: false would fall back to Docker.
    buildDepsLayer(outputDir, { nodeModules: this.nodeModules });
    return true;
  }
}

/**
 * The Lambda layer with the dependencies esbuild does not bundle well: sharp (native, Linux x86_64
 * build), OpenCV.js and the TensorFlow.js .wasm binaries. See layers/deps/build.ts for the list.
 */
export class DepsLayer extends Construct {
  readonly layer: lambda.LayerVersion;
  /** Where the functions find the layer's packages at run time. */
  readonly nodeModulesPath = LAYER_NODE_MODULES;

  constructor(scope: Construct, id: string, props: DepsLayerProps = {}) {
    super(scope, id);
    this.layer = new lambda.LayerVersion(this, 'Layer', {
      description: 'Myeloscope native and wasm dependencies: sharp (linux-x64), OpenCV.js, TensorFlow.js wasm binaries',
      compatibleRuntimes: [lambda.Runtime.NODEJS_22_X],
      compatibleArchitectures: [lambda.Architecture.X86_64],
      code: lambda.Code.fromAsset(fileURLToPath(new URL('../../layers/deps/', import.meta.url)), {
        // Hash what was copied, so a new version in node_modules makes a new layer version.
        assetHashType: AssetHashType.OUTPUT,
        bundling: {
          // Never pulled: LocalCopy always bundles or throws. BundlingOptions requires an image.
          image: DockerImage.fromRegistry('myeloscope/deps-layer-is-built-locally'),
          local: new LocalCopy(props.nodeModules ?? DEFAULT_NODE_MODULES),
        },
      }),
    });
  }
}
