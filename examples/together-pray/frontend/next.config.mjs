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

export default nextConfig;
