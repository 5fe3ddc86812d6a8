import { day, getJson, Prayer } from "./api";

// Rendered on each request on the server, from the API's current data.
export const dynamic = "force-dynamic";

export default async function Home() {
  const answer = await getJson<Prayer[]>("/prayers");
  const list = answer?.body ?? null;
  return (
    <main>
      <h1>Together Pray</h1>
      {list === null ? (
        <p role="alert">Prayers cannot be loaded right now. Please try again in a moment.</p>
      ) : (
        <ul data-testid="prayers">
          {list.map((prayer) => (
            <li key={prayer.id}>
              <p>
                <a href={`/prayers/${prayer.id}`}>{prayer.body}</a>
              </p>
              <small>
                {prayer.author}, {day(prayer.createdAt)}
              </small>
            </li>
          ))}
        </ul>
      )}
    </main>
  );
}
