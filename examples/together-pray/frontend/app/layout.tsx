import type { ReactNode } from "react";
import { ErrorTracking } from "./error-tracking";

// Read when a page renders, by name (Next.js inlines `process.env.NEXT_PUBLIC_...` at build time).
function runtimeEnv(name: string): string | undefined {
  return process.env[name] || undefined;
}

export const metadata = {
  title: "Together Pray",
  description: "Share prayer requests and pray for one another.",
};

export default function RootLayout({ children }: { children: ReactNode }) {
  return (
    <html lang="en">
      <body style={{ fontFamily: "system-ui, sans-serif", maxWidth: "40rem", margin: "2rem auto", padding: "0 1rem" }}>
        <ErrorTracking
          dsn={runtimeEnv("NEXT_PUBLIC_SENTRY_DSN")}
          release={runtimeEnv("RELEASE_ID")}
          environment={runtimeEnv("VIGIL_ENV")}
        />
        {children}
      </body>
    </html>
  );
}
