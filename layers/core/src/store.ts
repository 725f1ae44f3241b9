/**
 * The storage the pure core sees: keys and bytes, nothing about S3. The AWS layer implements it over S3;
 * tests may implement it over a Map.
 */
export interface BlobStore {
  get(key: string): Promise<Uint8Array>;
  /** Resolves the stored object's ETag (or another content version id) where the store has one. */
  put(key: string, body: Uint8Array | string, contentType?: string): Promise<string | void>;
  /** Resolves false when the key does not exist. */
  exists(key: string): Promise<boolean>;
  /** All keys under a prefix, in lexicographic order. */
  list(prefix: string): Promise<string[]>;
}
