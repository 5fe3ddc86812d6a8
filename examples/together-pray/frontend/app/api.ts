/** The API as the frontend's server reaches it on the same host (nginx's local listener, which follows the
 * live color); browsers use NEXT_PUBLIC_API_URL. */
const API = process.env.API_INTERNAL_URL ?? "http://127.0.0.1:3080/api";

export interface Prayer {
  id: number;
  author: string;
  body: string;
  createdAt: string;
}

/** The API's answer to GET `path`: its status and JSON body, or null when the API cannot be reached. */
export async function getJson<T>(path: string): Promise<{ status: number; body: T | null } | null> {
  try {
    const response = await fetch(`${API}${path}`, { cache: "no-store", signal: AbortSignal.timeout(5000) });
    return { status: response.status, body: response.ok ? ((await response.json()) as T) : null };
  } catch {
    return null;
  }
}

export function day(createdAt: string): string {
  return new Date(createdAt).toISOString().slice(0, 10);
}
