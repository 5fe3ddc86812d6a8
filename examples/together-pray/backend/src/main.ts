// First: the error tracking SDK instruments what loads after it.
import "./instrument";
import "reflect-metadata";
import { NestFactory } from "@nestjs/core";
import { AppModule } from "./app.module";

async function main(): Promise<void> {
  const app = await NestFactory.create(AppModule);
  // Routes sit at the root: nginx serves them under /api/ (stripping it), and the
  // health gate asks each color's port for /health directly.
  // SIGTERM from systemd: stop accepting, finish what is in flight, close the pool.
  app.enableShutdownHooks();
  const port = Number(process.env.PORT ?? 3001);
  await app.listen(port, process.env.HOST ?? "127.0.0.1");
}

main().catch((error) => {
  console.error(error);
  process.exit(1);
});
