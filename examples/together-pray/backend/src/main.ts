import "reflect-metadata";
import { NestFactory } from "@nestjs/core";
import { AppModule } from "./app.module";

async function main(): Promise<void> {
  const app = await NestFactory.create(AppModule);
  // nginx serves the API under /api/; the health gate asks each color directly.
  app.setGlobalPrefix("api", { exclude: ["health"] });
  // SIGTERM from systemd: stop accepting, finish what is in flight, close the pool.
  app.enableShutdownHooks();
  const port = Number(process.env.PORT ?? 3001);
  await app.listen(port, process.env.HOST ?? "127.0.0.1");
}

main().catch((error) => {
  console.error(error);
  process.exit(1);
});
