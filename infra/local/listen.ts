import type { Server } from 'node:http';
import type { AddressInfo } from 'node:net';

/**
 * Listens on a loopback port; a busy fixed port falls back to any free one (the local cloud prints the
 * endpoints it got, never assumes them). Resolves the port in use.
 */
export async function listenWithFallback(server: Server, port: number | undefined, address: string): Promise<number> {
  const listen = (p: number) =>
    new Promise<void>((resolve, reject) => {
      server.once('error', reject);
      server.listen(p, address, () => {
        server.off('error', reject);
        resolve();
      });
    });
  try {
    await listen(port ?? 0);
  } catch (err) {
    if ((err as NodeJS.ErrnoException).code !== 'EADDRINUSE' || !port) throw err;
    await listen(0);
  }
  return (server.address() as AddressInfo).port;
}
