// The build-time half of the SDK, as CommonJS (what Node gives an .mjs config for this package).
import sentryConfig from "@sentry/nextjs/config";

const { withSentryConfig } = sentryConfig;

/** @type {import('next').NextConfig} */
const nextConfig = {
  // A self-contained server (server.js and the node_modules it needs): the release vigil ships.
  output: "standalone",
  poweredByHeader: false,
  // nginx compresses; compressing twice wastes the frontend's CPU.
  compress: false,
  // The artifact's id when vigil builds it, so every host of a release serves the same asset paths.
  generateBuildId: async () => process.env.VIGIL_BUILD_ID ?? null,
};

// Sentry's build step, kept from reaching out: no telemetry to sentry.io, no source maps or releases
// uploaded (the build has no token and needs none; the DSN comes from the env at run time).
export default withSentryConfig(nextConfig, {
  telemetry: false,
  silent: true,
  sourcemaps: { disable: true },
  release: { create: false, finalize: false },
});
