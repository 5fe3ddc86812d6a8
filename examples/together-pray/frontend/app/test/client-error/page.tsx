import { notFound } from "next/navigation";
import { ThrowInBrowser } from "./throw-in-browser";

export const dynamic = "force-dynamic";

/**
 * A page that renders, then throws in the browser, for vigil's own tests of the browser SDK. It exists only
 * where the env sets SANDBOX_TEST_ROUTES=1 (the sandbox alone).
 */
export default async function ClientError({ searchParams }: { searchParams: Promise<{ kind?: string }> }) {
  if (process.env.SANDBOX_TEST_ROUTES !== "1") {
    notFound();
  }
  const kind = ((await searchParams).kind ?? "default").replace(/[^A-Za-z0-9-]/g, "").slice(0, 40) || "default";
  return (
    <main>
      <h1>Throws in the browser</h1>
      <ThrowInBrowser kind={kind} />
    </main>
  );
}
