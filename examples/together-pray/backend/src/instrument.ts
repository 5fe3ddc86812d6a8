import * as Sentry from "@sentry/nestjs";

/**
 * Error tracking, set up before anything else loads (main.ts imports this first). The env gives the DSN
 * (SENTRY_DSN: its own Bugsink, or sentry.io); unset, the SDK stays off and sends nothing. Each error
 * carries the release that threw it (RELEASE_ID, from the deploy) and the env it ran in (VIGIL_ENV).
 * When the receiver is down the SDK drops events in the background: no request waits for it.
 */
Sentry.init({
  dsn: process.env.SENTRY_DSN || undefined,
  release: process.env.RELEASE_ID,
  environment: process.env.VIGIL_ENV,
  // Errors only: Bugsink keeps no traces, and a sampled transaction per request costs the API time.
  tracesSampleRate: 0,
  // No visitor's address, cookies or headers leave the server with an error.
  sendDefaultPii: false,
});
