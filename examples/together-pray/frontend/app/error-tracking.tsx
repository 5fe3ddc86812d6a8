"use client";

import * as Sentry from "@sentry/nextjs";
import { useEffect } from "react";

export interface ErrorTrackingSettings {
  dsn?: string;
  release?: string;
  environment?: string;
}

/**
 * Error tracking in the browser, with what the server read from its env when it rendered the page (not
 * inlined at build time: one build serves every env). Uncaught errors and rejected promises go to the DSN's
 * receiver, tagged with the release and the env; without a DSN nothing is sent.
 */
export function ErrorTracking({ dsn, release, environment }: ErrorTrackingSettings): null {
  useEffect(() => {
    if (dsn && !Sentry.getClient()) {
      Sentry.init({ dsn, release, environment, tracesSampleRate: 0 });
    }
  }, [dsn, release, environment]);
  return null;
}
