import "reflect-metadata";
import { DataSource, DataSourceOptions } from "typeorm";
import { Prayer } from "./prayer.entity";
import { User } from "./user.entity";

/**
 * The connection, from DATABASE_URL alone (vigil writes it into the service's
 * env file: loopback on the database host, verify-full TLS to a separate one).
 * The TypeORM CLI uses this file for migrations; the app module uses the options.
 */
export function dataSourceOptions(): DataSourceOptions {
  const url = process.env.DATABASE_URL;
  if (!url) {
    throw new Error("DATABASE_URL is not set");
  }
  return {
    type: "postgres",
    url,
    entities: [Prayer, User],
    migrations: [__dirname + "/migrations/*.js"],
    migrationsTransactionMode: "each",
    synchronize: false,
    extra: { max: Number(process.env.DATABASE_POOL_SIZE ?? 10), connectionTimeoutMillis: 5000 },
  };
}

export default new DataSource(dataSourceOptions());
