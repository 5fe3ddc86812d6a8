import { notFound } from "next/navigation";

export const dynamic = "force-dynamic";

/**
 * A page slow on purpose, for vigil's own tests of audit.performance (a load over the 2 s target). It exists
 * only where the env sets SANDBOX_TEST_ROUTES=1, which secrets/schema.yml gives the sandbox alone.
 */
export default async function Slow({ searchParams }: { searchParams: Promise<{ ms?: string }> }) {
  if (process.env.SANDBOX_TEST_ROUTES !== "1") {
    notFound();
  }
  const ms = Math.min(Math.max(Number((await searchParams).ms ?? 2500) || 0, 0), 10000);
  await new Promise((resolve) => setTimeout(resolve, ms));
  return (
    <main>
      <h1>Slow on purpose</h1>
      <p>{ms} ms</p>
    </main>
  );
}
