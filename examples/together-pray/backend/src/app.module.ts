import { Module } from "@nestjs/common";
import { APP_FILTER } from "@nestjs/core";
import { SentryGlobalFilter, SentryModule } from "@sentry/nestjs/setup";
import { TypeOrmModule } from "@nestjs/typeorm";
import { AuthController } from "./auth/auth.controller";
import { dataSourceOptions } from "./data-source";
import { HealthController } from "./health.controller";
import { Prayer } from "./prayer.entity";
import { PrayersController } from "./prayers.controller";
import { TestRoutesController } from "./test-routes.controller";
import { User } from "./user.entity";

@Module({
  imports: [
    SentryModule.forRoot(),
    // Migrations run as their own deploy step, never at start-up.
    TypeOrmModule.forRootAsync({ useFactory: () => ({ ...dataSourceOptions(), migrationsRun: false }) }),
    TypeOrmModule.forFeature([Prayer, User]),
  ],
  controllers: [HealthController, PrayersController, AuthController, TestRoutesController],
  // Every unexpected error (not a 4xx the app chose) goes to the error tracker, then gets Nest's usual 500.
  providers: [{ provide: APP_FILTER, useClass: SentryGlobalFilter }],
})
export class AppModule {}
