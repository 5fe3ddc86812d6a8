import { notFound } from "next/navigation";

export const dynamic = "force-dynamic";

/**
 * A page whose render throws, as a bug would, for vigil's own tests of error tracking (the frontend's server
 * SDK must report it). It exists only where the env sets SANDBOX_TEST_ROUTES=1 (the sandbox alone).
 */
export default async function ServerError({ searchParams }: { searchParams: Promise<{ kind?: string }> }) {
  if (process.env.SANDBOX_TEST_ROUTES !== "1") {
    notFound();
  }
  const kind = ((await searchParams).kind ?? "default").replace(/[^A-Za-z0-9-]/g, "").slice(0, 40) || "default";
  throw new Error(`vigil test frontend error: ${kind}`);
}
