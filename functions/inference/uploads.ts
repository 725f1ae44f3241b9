/**
 * Presigned uploads for images over the direct-POST limit: POST /uploads hands out a short-lived S3 PUT URL
 * for work bucket `uploads/<uuid>.<ext>`; POST /predict?key=uploads/... then reads the object. The uploads
 * prefix triggers nothing (segment listens on processed/*.png only).
 */
import { randomUUID } from 'node:crypto';
import { PutObjectCommand } from '@aws-sdk/client-s3';
import { getSignedUrl } from '@aws-sdk/s3-request-presigner';
import { presignClient, type S3Store } from '../../layers/aws/src/s3.ts';
import { BadRequestError, NotFoundError, PayloadTooLargeError, UnsupportedMediaTypeError } from './http.ts';

export const UPLOADS_PREFIX = (process.env.UPLOADS_PREFIX ?? 'uploads/').replace(/\/?$/, '/');

const EXTENSIONS: Record<string, string> = {
  'image/jpeg': 'jpg',
  'image/png': 'png',
  'image/tiff': 'tif',
  'image/bmp': 'bmp',
  'image/x-ms-bmp': 'bmp',
  'image/webp': 'webp',
  'image/gif': 'gif',
  'application/octet-stream': 'bin',
};
const KEY_PATTERN = new RegExp(`^${UPLOADS_PREFIX.replace(/[.*+?^${}()|[\]\\]/g, '\\$&')}[0-9a-f-]{36}\\.(jpg|png|tif|bmp|webp|gif|bin)$`);

export interface UploadTicket {
  uploadUrl: string;
  method: 'PUT';
  key: string;
  expiresIn: number;
  /** Headers the PUT must carry (the content type is part of the signature). */
  headers: Record<string, string>;
  predict: { method: 'POST'; path: string; body: { key: string } };
}

export async function createUpload(bucket: string, contentType: string | undefined, expiresIn: number): Promise<UploadTicket> {
  const type = (contentType ?? 'application/octet-stream').toLowerCase();
  const ext = EXTENSIONS[type];
  if (!ext) {
    throw new UnsupportedMediaTypeError(`contentType ${type} is not an image type Myeloscope reads: use one of ${Object.keys(EXTENSIONS).join(', ')}`);
  }
  const key = `${UPLOADS_PREFIX}${randomUUID()}.${ext}`;
  const uploadUrl = await getSignedUrl(presignClient(), new PutObjectCommand({ Bucket: bucket, Key: key, ContentType: type }), { expiresIn });
  return {
    uploadUrl,
    method: 'PUT',
    key,
    expiresIn,
    headers: { 'content-type': type },
    predict: { method: 'POST', path: `/predict?key=${encodeURIComponent(key)}`, body: { key } },
  };
}

/** The bytes of an uploaded image, after checking the key is one /uploads hands out and the size. */
export async function readUpload(store: S3Store, key: string, maxBytes: number): Promise<Uint8Array> {
  if (!KEY_PATTERN.test(key)) {
    throw new BadRequestError('invalid-key', `key must be one returned by POST /uploads (${UPLOADS_PREFIX}<uuid>.<ext>), got ${JSON.stringify(key)}`);
  }
  const head = await store.head(key);
  if (!head) throw new NotFoundError('upload-not-found', `nothing uploaded at ${key}: PUT the image to the uploadUrl first (it expires)`);
  if (head.size > maxBytes) throw new PayloadTooLargeError(`the uploaded image is ${head.size} bytes; the limit is ${maxBytes}`);
  return store.get(key);
}
