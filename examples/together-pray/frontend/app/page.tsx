// Rendered on each request on the server, from the API's current data.
export const dynamic = "force-dynamic";

interface Prayer {
  id: number;
  author: string;
  body: string;
  createdAt: string;
}

// The API as the frontend's server reaches it on the same host (nginx's local listener,
// which follows the live color); browsers use NEXT_PUBLIC_API_URL.
const API = process.env.API_INTERNAL_URL ?? "http://127.0.0.1:3080/api";

async function prayers(): Promise<Prayer[] | null> {
  try {
    const response = await fetch(`${API}/prayers`, { cache: "no-store", signal: AbortSignal.timeout(5000) });
    return response.ok ? ((await response.json()) as Prayer[]) : null;
  } catch {
    return null;
  }
}

export default async function Home() {
  const list = await prayers();
  return (
    <main>
      <h1>Together Pray</h1>
      {list === null ? (
        <p role="alert">Prayers cannot be loaded right now. Please try again in a moment.</p>
      ) : (
        <ul data-testid="prayers">
          {list.map((prayer) => (
            <li key={prayer.id}>
              <p>{prayer.body}</p>
              <small>
                {prayer.author}, {new Date(prayer.createdAt).toISOString().slice(0, 10)}
              </small>
            </li>
          ))}
        </ul>
      )}
    </main>
  );
}
