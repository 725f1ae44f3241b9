/** Cell segmentation: find nucleated cells, label them from a plasma-cell mask, render and score. */
export { contentRegion, otsuThreshold, segmentCells, type Region, type Segmentation, type SegmentOptions } from './segment.ts';
export { labelCells } from './label.ts';
export { cellCrops, encodeCropPng, overlayPng, resizeSquare, roiImage, roiMaskPng, type CropOptions } from './render.ts';
export {
  maskComponents,
  segmentationQuality,
  type InstanceMatch,
  type QualityOptions,
  type SegmentationQuality,
} from './quality.ts';
export { getCv, liveMatCount, MatScope, wasmHeapBytes, withCv, type Cv, type Deletable } from './opencv.ts';
