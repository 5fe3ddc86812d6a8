import * as Sentry from "@sentry/nextjs";

/**
 * Error tracking in the frontend's server (pages rendered, route handlers): the env gives the DSN
 * (SENTRY_DSN: its own Bugsink, or sentry.io; unset, nothing is sent), each error carries the release that
 * threw it (RELEASE_ID, from the deploy) and the env (VIGIL_ENV). Browsers get theirs from app/error-tracking.tsx.
 */
export async function register(): Promise<void> {
  if (process.env.NEXT_RUNTIME === "nodejs") {
    Sentry.init({
      dsn: process.env.SENTRY_DSN || undefined,
      release: process.env.RELEASE_ID,
      environment: process.env.VIGIL_ENV,
      tracesSampleRate: 0,
    });
  }
}

// Errors thrown while rendering a page or answering a route reach the tracker (Next.js's hook).
export const onRequestError = Sentry.captureRequestError;
