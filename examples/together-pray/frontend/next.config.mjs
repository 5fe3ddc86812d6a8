/** @type {import('next').NextConfig} */
const nextConfig = {
  // A self-contained server (server.js and the node_modules it needs): the release vigil ships.
  output: "standalone",
  poweredByHeader: false,
  // nginx compresses; compressing twice wastes the frontend's CPU.
  compress: false,
};

export default nextConfig;
