// bmp-js 0.1.0 ships no types; this covers the part Myeloscope uses.
declare module 'bmp-js' {
  interface BmpDecoded {
    width: number;
    height: number;
    /** 4 bytes a pixel in A, B, G, R order (not RGBA). */
    data: Buffer;
  }
  interface BmpEncoded {
    data: Buffer;
    width: number;
    height: number;
  }
  const bmp: {
    decode(buffer: Buffer): BmpDecoded;
    /** data: 4 bytes a pixel in A, B, G, R order; writes a 24-bit top-down BMP. */
    encode(img: { data: Uint8Array; width: number; height: number }, quality?: number): BmpEncoded;
  };
  export default bmp;
}
