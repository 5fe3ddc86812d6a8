import { notFound } from "next/navigation";
import { day, getJson, Prayer } from "../../api";

export const dynamic = "force-dynamic";

/** One prayer's own page (the link each prayer has on the home page). */
export default async function PrayerPage({ params }: { params: Promise<{ id: string }> }) {
  const { id } = await params;
  if (!/^[0-9]{1,9}$/.test(id)) {
    notFound();
  }
  const answer = await getJson<Prayer>(`/prayers/${id}`);
  if (answer?.status === 404) {
    notFound();
  }
  const prayer = answer?.body;
  return (
    <main>
      <h1>A prayer</h1>
      {prayer ? (
        <article>
          <p>{prayer.body}</p>
          <small>
            {prayer.author}, {day(prayer.createdAt)}
          </small>
        </article>
      ) : (
        <p role="alert">This prayer cannot be loaded right now. Please try again in a moment.</p>
      )}
      <p>
        <a href="/">All prayers</a>
      </p>
    </main>
  );
}
